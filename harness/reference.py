"""Plain float64 references that several variants share.

Readable first: each line is the formula, with the shape beside it.
"""

from __future__ import annotations

import math

import torch

from harness.variant import Variant


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                      rows: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ / √d + mask) v for q (B, H, N, d), k and v (B, H, M, d).

    The causal mask lets query i see keys j <= i + (M - N) (aligned at the
    end, as SDPA and flash-attn do when M != N). With `rows`, only those
    query rows are computed.
    """
    seq_len, kv_len, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    query_index = torch.arange(seq_len, device=q.device)
    if rows is not None:
        q = q[..., rows, :]                                   # (B, H, R, d)
        query_index = query_index[rows]
    scores = (q @ k.transpose(-2, -1)) * scale                # (B, H, R, M)
    if causal:
        key_index = torch.arange(kv_len, device=q.device)
        allowed = key_index[None, :] <= query_index[:, None] + (kv_len - seq_len)   # (R, M)
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)                   # (B, H, R, M)
    weights = torch.nan_to_num(weights, nan=0.0)              # a fully masked row attends to nothing
    return weights @ v                                        # (B, H, R, d)


def attention_flops(case, *, causal_fraction: bool = True) -> int:
    """FLOPs of q kᵀ and P v for a dense case: 4·B·H·N·M·d, halved (about) under a causal mask."""
    total = 4 * case.batch * case.heads * case.seq_len * case.kv_len * case.head_dim
    if case.causal and causal_fraction:
        visible = causal_visible_pairs(case.seq_len, case.kv_len)
        total = total * visible // (case.seq_len * case.kv_len)
    return total


def causal_visible_pairs(seq_len: int, kv_len: int) -> int:
    """Number of (query, key) pairs a causal mask aligned at the end lets through."""
    offset = kv_len - seq_len
    total = 0
    # query i sees min(kv_len, max(0, i + offset + 1)) keys; sum in closed form over the ramp.
    first_full = max(0, kv_len - offset - 1)
    ramp_end = min(seq_len, first_full)
    ramp_start = max(0, -offset - 1 + 1) if offset < 0 else 0
    for_ramp = range(ramp_start, ramp_end)
    if len(for_ramp):
        a, b = for_ramp.start + offset + 1, for_ramp.stop - 1 + offset + 1
        total += (a + b) * len(for_ramp) // 2
    total += max(0, seq_len - max(ramp_end, ramp_start)) * kv_len
    return total


class ExactSoftmaxKernel(Variant):
    """Base for kernels that compute softmax attention exactly (SDPA, flash-attn, xformers, flex).

    Shares the float64 reference, the dense FLOP count (causal pairs only) and
    a flash-style memory model: the (B, H, N, d) output and a float32
    log-sum-exp per row. Subclasses write `prepare` and their reasons.
    """

    computes = "softmax_attention"

    def reference(self, case, inputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows)

    def flops(self, case) -> int:
        return attention_flops(case)

    def memory_model(self, case) -> int:
        rows = case.batch * case.heads * case.seq_len
        return rows * case.head_dim * case.element_bytes + rows * 4

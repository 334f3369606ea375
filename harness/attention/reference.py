"""Plain float64 references that several variants share.

Readable first: each line is the formula, with the shape beside it.
"""

from __future__ import annotations

import math

import torch

from attnbench.attention.flops import attention_flops
from attnbench.attention.masks import (
    MaskMod,
    case_mask_matrix,
    case_mask_mod,
    causal_mask,
    mask_matrix,
)
from attnbench.attention.sinks import case_sinks, softmax_with_sinks
from attnbench.core.variant import Variant, kv_state_size
from attnbench.kinds.score_mods import ScoreMod, apply_score_mod, case_score_mod


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                      rows: torch.Tensor | None = None, scale: float | None = None,
                      mask_mod: MaskMod | None = None, score_mod: ScoreMod | None = None,
                      sinks: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(mod(q kᵀ / √d) + mask) v for q (B, H, N, d), k (B, Hkv, M, d) and v (B, Hkv, M, d_v).

    With Hkv < H (GQA/MQA) query head h uses key/value head h // (H // Hkv).
    The causal mask lets query i see keys j <= i + (M - N) (aligned at the
    end, as SDPA and flash-attn do when M != N). With `rows`, only those
    query rows are computed. `mask_mod` (a case's whole mask,
    `attnbench.attention.masks.case_mask_mod`) replaces the causal flag;
    `score_mod` (`attnbench.kinds.score_mods.case_score_mod`) rewrites the
    scaled scores before the mask. `sinks` (H,) adds exp(s_h) to each row's
    softmax denominator (`attnbench.attention.sinks`).
    """
    seq_len, kv_len, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    k, v = repeat_kv(k, q.shape[-3]), repeat_kv(v, q.shape[-3])   # (B, H, M, d), (B, H, M, d_v)
    if rows is not None:
        q = q[..., rows, :]                                   # (B, H, R, d)
    scores = (q @ k.transpose(-2, -1)) * scale                # (B, H, R, M)
    if score_mod is not None:
        scores = apply_score_mod(scores, score_mod, seq_len, kv_len, rows=rows)      # (B, H, R, M)
    if mask_mod is not None:
        allowed = mask_matrix(mask_mod, seq_len, kv_len, rows=rows, device=q.device)  # (R, M)
        scores = scores.masked_fill(~allowed, float("-inf"))
    elif causal:
        allowed = causal_mask(seq_len, kv_len, rows=rows, device=q.device)          # (R, M)
        scores = scores.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        weights = softmax_with_sinks(scores, sinks)           # (B, H, R, M), exp(s_h) in each denominator
    else:
        weights = torch.softmax(scores, dim=-1)               # (B, H, R, M)
    weights = torch.nan_to_num(weights, nan=0.0)              # a fully masked row attends to nothing
    return weights @ v                                        # (B, H, R, d_v)


def case_softmax_attention(case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           rows: torch.Tensor | None = None) -> torch.Tensor:
    """`softmax_attention` of `case`'s function: its causal flag, mask and score mod."""
    return softmax_attention(q, k, v, causal=case.causal, rows=rows, mask_mod=case_mask_mod(case),
                             score_mod=case_score_mod(case), sinks=case_sinks(case))


def softmax_weights(case, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, H, R, M) float64 softmax(mod(q kᵀ/√d) + mask) of query `rows`, with `case`'s score mod and mask.

    q (B, H, N, d) and k (B, Hkv, M, d) in any dtype (computed in float64);
    a fully masked row is 0.
    """
    q = q.detach().double()[..., rows, :]                                   # (B, H, R, d)
    k = repeat_kv(k.detach().double(), q.shape[-3])                          # (B, H, M, d)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])               # (B, H, R, M)
    score_mod = case_score_mod(case)
    if score_mod is not None:
        scores = apply_score_mod(scores, score_mod, case.seq_len, case.kv_len, rows=rows)
    allowed = case_mask_matrix(case, rows=rows)                              # (R, M) or None
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    sinks = case_sinks(case)
    weights = softmax_with_sinks(scores, sinks) if sinks is not None else torch.softmax(scores, dim=-1)
    return weights.nan_to_num(nan=0.0)                                       # (B, H, R, M)


def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Hkv, M, d) -> (B, H, M, d): each key/value head repeated for its H // Hkv query heads."""
    groups = heads // x.shape[-3]
    return x if groups == 1 else x.repeat_interleave(groups, dim=-3)


class ExactSoftmaxKernel(Variant):
    """Base for kernels that compute softmax attention exactly (SDPA, flash-attn, xformers, flex).

    Shares the float64 reference, the dense FLOP count (causal pairs only) and
    a flash-style memory model: the (B, H, N, d) output and a float32
    log-sum-exp per row. Subclasses write `prepare` and their reasons.
    """

    computes = "softmax_attention"

    def reference(self, case, inputs, rows=None) -> torch.Tensor:
        return case_softmax_attention(case, *inputs.tensors(), rows=rows)

    def flops(self, case) -> int:
        return attention_flops(case)

    def state_size(self, case) -> int:
        return kv_state_size(case)

    def memory_model(self, case) -> int:
        rows = case.batch * case.heads * case.seq_len
        return rows * case.v_head_dim * case.element_bytes + rows * 4

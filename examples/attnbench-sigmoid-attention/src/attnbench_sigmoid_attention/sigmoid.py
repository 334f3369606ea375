"""Sigmoid attention: an elementwise sigmoid of the scores in place of the row softmax.

    out = σ(q kᵀ / √d + b) v,   b = −log M,   q (B, H, N, d), k and v (B, H, M, d)

Each weight is independent of the other keys, so there is no row normalisation
and no running max; the bias −log M keeps the row sums near the softmax's 1 at
the start (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
Self-Attention", 2024). A causal mask sets the weights of masked keys to zero:
the kernel adds −∞ to their scores, and σ(−∞) = 0 exactly (the mask is
aligned at the end, as SDPA aligns it when M != N).

Only attnbench's public plugin API is used, imported as ``from attnbench import
...``; the causal mask is attnbench's own `causal_mask`, the one every built-in
variant and reference uses.
"""

from __future__ import annotations

import math

import torch

from attnbench import AttentionInputs, Case, Variant, attention_flops, causal_mask


def sigmoid_bias(kv_len: int) -> float:
    """b = −log M: a row of M weights σ(b) ≈ 1/M sums to about 1 when the scores are near 0."""
    return -math.log(kv_len)


class SigmoidAttention(Variant):
    name = "sigmoid"
    family = "sigmoid"
    computes = "sigmoid_attention"
    description = "σ(QKᵀ/√d − log M)V: an elementwise sigmoid instead of the row softmax"
    params = {}
    devices = ("cpu", "cuda")
    dtypes = ("float32", "float16", "bfloat16", "float64")
    supports_causal = True
    supports_backward = True
    supports_cross = True
    reference_rows = True

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        batch_heads = case.batch * case.heads
        scale = 1.0 / math.sqrt(case.head_dim)
        # The bias, as a scalar or, under a causal mask, an (N, M) matrix that is −∞ where a key
        # is hidden: σ(−∞) = 0 zeroes those weights exactly, and their gradient too.
        bias = torch.tensor(sigmoid_bias(case.kv_len), dtype=q.dtype, device=q.device)
        if case.causal:
            allowed = causal_mask(case.seq_len, case.kv_len, device=q.device)                 # (N, M)
            bias = torch.full(allowed.shape, float("-inf"), dtype=q.dtype, device=q.device)
            bias.masked_fill_(allowed, sigmoid_bias(case.kv_len))
        q3 = q.reshape(batch_heads, case.seq_len, case.head_dim)                              # (BH, N, d)
        kt3 = k.transpose(-2, -1).reshape(batch_heads, case.head_dim, case.kv_len)            # (BH, d, M)
        v3 = v.reshape(batch_heads, case.kv_len, case.head_dim)                               # (BH, M, d)

        def forward() -> torch.Tensor:
            # b + (q kᵀ)/√d in one kernel, so only one N×M buffer is written.
            scores = torch.baddbmm(bias, q3, kt3, alpha=scale)                                # (BH, N, M)
            if scores.requires_grad:
                weights = torch.sigmoid(scores)                                               # (BH, N, M)
                del scores
            else:
                weights = scores.sigmoid_()                                                   # in place
            out = torch.bmm(weights, v3)                                                      # (BH, N, d)
            return out.view(case.batch, case.heads, case.seq_len, case.head_dim)              # (B, H, N, d)

        return forward

    def reference(self, case: Case, inputs: AttentionInputs, rows: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = inputs.tensors()                                      # float64
        if rows is not None:
            q = q[..., rows, :]                                         # (B, H, R, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(case.head_dim)    # (B, H, R, M)
        weights = torch.sigmoid(scores + sigmoid_bias(case.kv_len))     # (B, H, R, M)
        if case.causal:
            allowed = causal_mask(case.seq_len, case.kv_len, rows=rows, device=q.device)   # (R, M)
            weights = weights * allowed
        return weights @ v                                              # (B, H, R, d)

    def flops(self, case: Case) -> int:
        """Useful FLOPs of the function: q kᵀ and W v over the visible pairs, 2·B·H·pairs·d each."""
        return attention_flops(case)

    def performed_flops(self, case: Case) -> int:
        """What this forward executes: the full N×M products, masked afterwards under a causal mask."""
        return 4 * case.batch * case.heads * case.seq_len * case.kv_len * case.head_dim

    def memory_model(self, case: Case) -> int:
        """The N×M scores (sigmoid in place forward-only; scores and weights with autograd), the output,
        and the (N, M) causal bias."""
        score_bytes = case.batch * case.heads * case.seq_len * case.kv_len * case.element_bytes
        output_bytes = case.batch * case.heads * case.seq_len * case.head_dim * case.element_bytes
        bias_bytes = case.seq_len * case.kv_len * case.element_bytes if case.causal else 0
        copies = 1 if case.mode == "fwd" else 2
        return copies * score_bytes + output_bytes + bias_bytes

    def attention_weights(self, case: Case, inputs: AttentionInputs) -> torch.Tensor:
        """σ(q kᵀ/√d − log M), masked: the weights are explicit, and not normalised per row."""
        q, k, _ = (t.to(torch.float64) for t in inputs.tensors())
        weights = torch.sigmoid(q @ k.transpose(-2, -1) / math.sqrt(case.head_dim) + sigmoid_bias(case.kv_len))
        if case.causal:
            weights = weights * causal_mask(case.seq_len, case.kv_len, device=q.device)
        return weights

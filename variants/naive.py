"""Naive quadratic attention: the score and probability matrices materialised in full.

out = softmax(q kᵀ / √d + mask) v, with q (B, H, N, d) and k, v (B, H, M, d).
The (B, H, N, M) scores exist twice at the peak (scores and probabilities),
which is exactly the cost the flash family removes.
"""

from __future__ import annotations

import math

import torch

from harness import AttentionInputs, Case, Variant, attention_flops, causal_mask, softmax_attention


class NaiveAttention(Variant):
    name = "naive"
    family = "naive"
    computes = "softmax_attention"
    description = "softmax(QKᵀ/√d)V with the N×M score and probability matrices in memory"

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        scale = 1.0 / math.sqrt(case.head_dim)
        hidden = ~causal_mask(case.seq_len, case.kv_len, device=q.device) if case.causal else None   # (N, M)

        def forward() -> torch.Tensor:
            scores = torch.matmul(q, k.transpose(-2, -1))      # (B, H, N, M)
            scores = scores.mul_(scale) if not scores.requires_grad else scores * scale
            if hidden is not None:
                scores = scores.masked_fill(hidden, float("-inf"))
            probs = torch.softmax(scores, dim=-1)              # (B, H, N, M)
            del scores
            return torch.matmul(probs, v)                      # (B, H, N, d)

        return forward

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows)

    def flops(self, case: Case) -> int:
        return attention_flops(case)

    def performed_flops(self, case: Case) -> int:
        """Both N×M products in full: a causal mask is applied to the scores after q kᵀ."""
        return attention_flops(case, pairs=case.seq_len * case.kv_len)

    def memory_model(self, case: Case) -> int:
        score_elements = case.batch * case.heads * case.seq_len * case.kv_len
        output_elements = case.batch * case.heads * case.seq_len * case.head_dim
        mask_bytes = case.seq_len * case.kv_len if case.causal else 0
        return 2 * score_elements * case.element_bytes + output_elements * case.element_bytes + mask_bytes

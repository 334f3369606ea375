"""Naive quadratic attention: the score and probability matrices materialised in full.

out = softmax(mod(q kᵀ / √d) + mask) v, with q (B, H, N, d), k (B, Hkv, M, d) and
v (B, Hkv, M, d_v); mod is the case's score mod (ALiBi's bias or a soft cap).
A query the mask leaves no key attends to nothing: its row is 0, as in the
float64 reference, SDPA and the flash kernels.
The (B, H, N, M) scores exist twice at the peak (scores and probabilities),
which is exactly the cost the flash family removes.

A ragged batch (`lengths`) runs ``padded`` as one call whose (B, 1, N_max, M_max)
mask hides each sequence's padding keys, or ``packed`` as one call per
sequence on views of the packed tokens (`attnbench.attention.ragged`).
"""

from __future__ import annotations

import math

import torch

from attnbench import (
    AttentionInputs,
    Case,
    Variant,
    attention_flops,
    case_mask_matrix,
    case_mask_mod,
    case_score_mod,
    case_sinks,
    case_softcap,
    is_ragged,
    kv_reader,
    kv_state_size,
    padded_allowed,
    per_sequence,
    ragged_batch,
    ragged_execution,
    score_bias,
    softmax_attention,
)


class NaiveAttention(Variant):
    name = "naive"
    family = "naive"
    computes = "softmax_attention"
    description = "softmax(QKᵀ/√d)V with the N×M score and probability matrices in memory"
    supports_gqa = True
    supports_v_head_dim = True
    supported_masks = ("sliding_window", "document", "prefix_lm")
    supported_score_mods = ("alibi", "softcap")
    supports_sinks = True
    supports_lengths = True
    supported_layouts = ("padded", "packed")
    supports_paged_kv = True

    def prepare(self, case: Case, inputs: AttentionInputs):
        if is_ragged(case):
            return self._prepare_ragged(case, inputs)
        q, k, v = inputs.tensors()                             # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        read_kv = kv_reader(case, k, v)                        # k, v, or a paged cache's pages gathered
        scale = 1.0 / math.sqrt(case.head_dim)
        b, h, n, d = q.shape
        hkv, groups = case.kv_heads, case.heads // case.kv_heads
        allowed = case_mask_matrix(case, device=q.device)     # (N, M), None when every key is visible
        hidden = blind = None
        if allowed is not None:
            sees_none = ~allowed.any(dim=-1, keepdim=True)     # (N, 1): queries that see no key attend to nothing
            # Their softmax would be 0/0: unmask the row so it stays finite, then zero its weights.
            hidden = ~allowed & ~sees_none
            blind = sees_none.repeat(groups, 1) if bool(sees_none.any()) else None   # (G·N, 1)
            hidden = hidden.repeat(groups, 1)                  # (G·N, M): one block of rows per head of a group
        bias = score_bias(case, dtype=q.dtype, device=q.device) if case.score_mod == "alibi" else None  # (H, N, M)
        if bias is not None:
            bias = bias.reshape(hkv, groups * n, case.kv_len)  # (Hkv, G·N, M): head h = kv_head·G + g
        cap = case_softcap(case)
        sinks = case_sinks(case, device=q.device)
        if sinks is not None:                                  # (H,) -> (Hkv, G·N, 1), row g·N + n of head kv·G + g
            sinks = sinks.to(q.dtype).view(hkv, groups, 1).expand(hkv, groups, n).reshape(hkv, groups * n, 1)

        def forward() -> torch.Tensor:
            k, v = read_kv()                                   # (B, Hkv, M, d), (B, Hkv, M, d_v)
            grouped_q = q.reshape(b, hkv, groups * n, d)       # (B, Hkv, G·N, d): a group's heads share k, v
            scores = torch.matmul(grouped_q, k.transpose(-2, -1))   # (B, Hkv, G·N, M)
            scores = scores.mul_(scale) if not scores.requires_grad else scores * scale
            if bias is not None:
                scores = scores + bias
            if cap is not None:
                scores = torch.tanh(scores / cap) * cap        # soft cap: C·tanh(s / C)
            if hidden is not None:
                scores = scores.masked_fill(hidden, float("-inf"))
            if sinks is None:
                probs = torch.softmax(scores, dim=-1)          # (B, Hkv, G·N, M)
            else:                                              # exp(s_h) joins the denominator: a zero-value column
                sink_column = sinks.expand(b, hkv, groups * n, 1)
                probs = torch.softmax(torch.cat([scores, sink_column], dim=-1), dim=-1)[..., :-1]
            del scores
            if blind is not None:
                probs = probs.masked_fill(blind, 0.0)
            return torch.matmul(probs, v).reshape(b, h, n, -1)    # (B, H, N, d_v)

        return forward

    def _prepare_ragged(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()                             # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        if case.layout == "packed":
            return per_sequence(case, q, k, v, lambda one, *qkv: self.prepare(one, AttentionInputs(*qkv)))
        batch = ragged_batch(case)
        n, m = batch.max_queries, batch.max_keys
        q, k, v = q[:, :, :n], k[:, :, :m], v[:, :, :m]        # (B, H, N_max, d), (B, Hkv, M_max, d), ...
        b, h, _, d = q.shape
        hkv, groups = case.kv_heads, case.heads // case.kv_heads
        hidden = ~padded_allowed(batch, device=q.device).repeat(1, 1, groups, 1)   # (B, 1, G·N_max, M_max)
        scale = 1.0 / math.sqrt(case.head_dim)

        def forward() -> torch.Tensor:
            grouped_q = q.reshape(b, hkv, groups * n, d)       # (B, Hkv, G·N_max, d)
            scores = torch.matmul(grouped_q, k.transpose(-2, -1)).mul_(scale)   # (B, Hkv, G·N_max, M_max)
            probs = torch.softmax(scores.masked_fill_(hidden, float("-inf")), dim=-1)
            return torch.matmul(probs, v).reshape(b, h, n, -1)    # (B, H, N_max, d_v)

        return forward

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, mask_mod=case_mask_mod(case),
                                 score_mod=case_score_mod(case), sinks=case_sinks(case))

    def state_size(self, case: Case) -> int:
        return kv_state_size(case)

    def flops(self, case: Case) -> int:
        return attention_flops(case)

    def performed_flops(self, case: Case) -> int:
        """Both N×M products in full: a causal mask is applied to the scores after q kᵀ (a ragged batch: the
        rectangles its layout forms)."""
        if is_ragged(case):
            return attention_flops(case, batch_pairs=ragged_batch(case).rectangle_pairs(case.layout))
        return attention_flops(case, pairs=case.seq_len * case.kv_len)

    def memory_model(self, case: Case) -> int:
        score_elements = case.batch * case.heads * case.seq_len * case.kv_len
        output_elements = case.batch * case.heads * case.seq_len * case.v_head_dim
        mask_bytes = case.seq_len * case.kv_len if case.causal or case.mask != "none" else 0
        if case.score_mod == "alibi":
            mask_bytes += score_elements // case.batch * case.element_bytes
        return 2 * score_elements * case.element_bytes + output_elements * case.element_bytes + mask_bytes

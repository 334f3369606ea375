"""Additive (Bahdanau) attention: score(q, k) = vᵀ tanh(W₁q + W₂k).

    score[b, h, i, j] = Σₐ v[a] · tanh((W₁ q[b, h, i])[a] + (W₂ k[b, h, j])[a])
    out[b, h, i]      = Σⱼ softmax_j(score[b, h, i, :]) · V[b, h, j]

How a case maps onto the family: every (batch, head) pair is one independent
sequence of `seq_len` decoder queries attending over `kv_len` encoder keys,
with q (B, H, N, d) as the decoder states, k (B, H, M, d) as the encoder states
and v (B, H, M, d) as the values. W₁, W₂ (attn_dim × head_dim) and v (attn_dim)
are one set of seeded weights shared by every batch element and head. There is
no 1/√d scaling (the tanh bounds the score). A causal case lets query i see keys
j <= i + (M - N), as everywhere in attnbench; a query that sees no key outputs 0.

Cost: the tanh cannot be factored, so N·M·attn_dim of it is unavoidable. The
projections are made once (q → (B, H, N, a), k → (B, H, M, a)), then queries are
processed `chunk` rows at a time, so the largest temporary is one chunk's
(B, H, chunk, M, attn_dim) tanh tensor and never the full (B, H, N, M, attn_dim).
Under a causal mask a chunk only touches the keys its last row can see.

Backward: each chunk runs under `torch.utils.checkpoint` (non-reentrant), so
autograd keeps only the chunk's inputs (views of the projections) and
recomputes the chunk's tanh tensor during backward, one chunk at a time: the
backward's extra memory is one chunk's tanh tensor and its gradient, plus the
gradients of the projections, instead of the full N·M·attn_dim activation.
The price is one extra forward of each chunk in backward.

The scorer itself is in `attnbench.variants._tanh_scorer`, shared with `luong-concat`
(Luong's concat score is the same function with W split into query and key halves).
"""

from __future__ import annotations

import math

from attnbench import Case
from attnbench.variants._tanh_scorer import ChunkedTanhScorer, weight_for


class AdditiveAttention(ChunkedTanhScorer):
    name = "additive"
    family = "additive"
    computes = "additive_attention"
    description = "Bahdanau attention vᵀtanh(W₁q + W₂k), chunked over queries (no N×M×attn_dim tensor)"

    W1_TAG, W2_TAG, V_TAG = 101, 102, 103

    def _weights(self, case: Case, device=None, dtype=None):
        attn_dim, = self.knob_values(case, "attn_dim")
        d = case.head_dim
        w1 = weight_for(case, self.W1_TAG, (attn_dim, d), 1 / math.sqrt(d), device, dtype)
        w2 = weight_for(case, self.W2_TAG, (attn_dim, d), 1 / math.sqrt(d), device, dtype)
        score_vector = weight_for(case, self.V_TAG, (attn_dim,), 1 / math.sqrt(attn_dim), device, dtype)
        return w1, w2, score_vector

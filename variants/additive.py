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

This module also holds the chunked scorer that `luong-concat` reuses (Luong's
concat score is the same function with W split into query and key halves).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from harness import AttentionInputs, Case, Variant, causal_visible_pairs, seeded_weight, torch_dtype

# With chunk=0 (auto), a chunk holds as many query rows as keep its tanh tensor
# under this many elements (128 MiB in float32).
AUTO_CHUNK_ELEMENTS = 1 << 25
# The float64 reference works through this many elements of tanh at a time.
REFERENCE_BLOCK_ELEMENTS = 1 << 22


def chunk_rows(case: Case, attn_dim: int, chunk: int) -> int:
    """Query rows per chunk: `chunk` if positive, else the auto size (at least 1)."""
    if chunk > 0:
        return min(chunk, case.seq_len)
    per_row = case.batch * case.heads * case.kv_len * attn_dim
    return max(1, min(case.seq_len, AUTO_CHUNK_ELEMENTS // per_row))


def knob_reasons(params: dict, defaults: dict) -> list[str]:
    """Reasons for knob values out of range (attn_dim >= 1, chunk >= 0)."""
    reasons = []
    attn_dim = params.get("attn_dim", defaults["attn_dim"])
    chunk = params.get("chunk", defaults["chunk"])
    if isinstance(attn_dim, bool) or not isinstance(attn_dim, int) or attn_dim < 1:
        reasons.append(f"attn_dim must be a positive integer, not {attn_dim!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
        reasons.append(f"chunk must be a non-negative integer (0 = auto), not {chunk!r}")
    return reasons


def _causal_mask(rows: torch.Tensor, visible: int, offset: int, device) -> torch.Tensor:
    """True where key j is hidden from query row i: j > i + offset.  (rows, visible)"""
    key_index = torch.arange(visible, device=device)
    return key_index[None, :] > rows[:, None] + offset


def _additive_chunk(q_proj: torch.Tensor, k_proj: torch.Tensor, score_vector: torch.Tensor,
                    values: torch.Tensor, first_row: int, offset: int, causal: bool,
                    workspace: torch.Tensor | None = None) -> torch.Tensor:
    """One chunk of rows: q_proj (B, H, c, a), k_proj (B, H, M', a), values (B, H, M', d) -> (B, H, c, d).

    `workspace` (inference only) is a flat buffer the tanh tensor is written into,
    so every chunk reuses one allocation instead of mapping fresh pages each time.
    """
    shape = (*q_proj.shape[:-1], k_proj.shape[-2], q_proj.shape[-1])
    if workspace is None:
        hidden = q_proj.unsqueeze(-2) + k_proj.unsqueeze(-3)     # (B, H, c, M', a)
    else:
        hidden = workspace[:math.prod(shape)].view(shape)
        torch.add(q_proj.unsqueeze(-2), k_proj.unsqueeze(-3), out=hidden)
    hidden = hidden.tanh_()                                      # in place: add's backward needs no output
    scores = torch.matmul(hidden, score_vector)                  # (B, H, c, M')
    del hidden
    if causal:
        rows = torch.arange(first_row, first_row + q_proj.shape[-2], device=q_proj.device)
        hidden_keys = _causal_mask(rows, k_proj.shape[-2], offset, q_proj.device)   # (c, M')
        # A finite fill keeps rows that see no key free of NaN (also in backward); they are zeroed below.
        scores = scores.masked_fill(hidden_keys, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if scores.dtype != torch.float64 else None)
    del scores
    if causal and first_row + offset < 0:
        sees_a_key = (rows + offset >= 0).to(weights.dtype)     # (c,)
        weights = weights * sees_a_key[:, None]
    return torch.matmul(weights.to(values.dtype), values)        # (B, H, c, d)


def chunked_additive_attention(q_proj: torch.Tensor, k_proj: torch.Tensor, score_vector: torch.Tensor,
                               values: torch.Tensor, causal: bool, rows_per_chunk: int) -> torch.Tensor:
    """softmax_j(vᵀ tanh(q_proj[i] + k_proj[j])) · values, `rows_per_chunk` query rows at a time.

    q_proj (B, H, N, a), k_proj (B, H, M, a), score_vector (a,), values (B, H, M, d) -> (B, H, N, d).
    """
    batch, heads, seq_len, _ = q_proj.shape
    kv_len, head_dim = values.shape[-2], values.shape[-1]
    offset = kv_len - seq_len
    tensors = (q_proj, k_proj, score_vector, values)
    track = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    pieces = []
    out = None if track else values.new_empty(batch, heads, seq_len, head_dim)
    workspace = None if track else q_proj.new_empty(batch * heads * min(rows_per_chunk, seq_len) * kv_len
                                                     * q_proj.shape[-1])
    for start in range(0, seq_len, rows_per_chunk):
        stop = min(seq_len, start + rows_per_chunk)
        visible = min(kv_len, stop + offset) if causal else kv_len   # keys the chunk's last row sees
        if visible <= 0:
            piece = values.new_zeros(batch, heads, stop - start, head_dim)
        else:
            args = (q_proj[:, :, start:stop], k_proj[:, :, :visible], score_vector,
                    values[:, :, :visible], start, offset, causal)
            if track:
                piece = checkpoint(_additive_chunk, *args, use_reentrant=False)
            else:
                piece = _additive_chunk(*args, workspace=workspace)
        if track:
            pieces.append(piece)
        else:
            out[:, :, start:stop] = piece
            del piece
    return torch.cat(pieces, dim=-2) if track else out


def additive_memory_model(case: Case, attn_dim: int, rows: int) -> int:
    """Peak bytes of the projections plus `chunked_additive_attention`, in inference mode.

    Alive throughout: both projections (B, H, N+M, a) and the output (B, H, N, d).
    Within a chunk the peak is the larger of two phases: the tanh tensor
    (B, H, c, M, a) while its scores (B, H, c, M) are made, or, once the tanh
    tensor is freed, the scores, their masked copy (causal), the softmax weights
    (float32, or float64 for float64) and their cast back to a half dtype.
    """
    e = case.element_bytes
    bh = case.batch * case.heads
    projections = bh * (case.seq_len + case.kv_len) * attn_dim * e
    output = bh * case.seq_len * case.head_dim * e
    score_elements = bh * rows * case.kv_len
    hidden_phase = score_elements * attn_dim * e + score_elements * e
    softmax_bytes = 8 if e == 8 else 4
    scores_phase = (score_elements * e * (2 if case.causal else 1) + score_elements * softmax_bytes
                    + (score_elements * e if e == 2 else 0) + bh * rows * case.head_dim * e)
    mask = rows * case.kv_len if case.causal else 0
    return projections + output + max(hidden_phase, scores_phase) + mask


def additive_flops(case: Case, attn_dim: int, projection_flops: int) -> int:
    """Projections, then per visible (query, key) pair: a adds, a tanh (1 FLOP each), 2a for vᵀ·, 2d for P·V."""
    pairs = case.batch * case.heads * (causal_visible_pairs(case.seq_len, case.kv_len) if case.causal
                                       else case.seq_len * case.kv_len)
    return projection_flops + pairs * (4 * attn_dim + 2 * case.head_dim)


def additive_reference_weights(q_proj: torch.Tensor, k_proj: torch.Tensor, score_vector: torch.Tensor,
                               query_index: torch.Tensor, causal: bool) -> torch.Tensor:
    """Float64 weights softmax_j(vᵀ tanh(q_proj[i] + k_proj[j])) for the given rows.  (B, H, R, M)

    Plain formula, evaluated a few rows at a time only to bound the memory of the
    (rows, M, attn_dim) tanh tensor.
    """
    batch, heads, _, attn_dim = q_proj.shape
    kv_len, seq_len = k_proj.shape[-2], q_proj.shape[-2]
    step = max(1, REFERENCE_BLOCK_ELEMENTS // (batch * heads * kv_len * attn_dim))
    blocks = []
    for start in range(0, len(query_index), step):
        rows = query_index[start:start + step]
        hidden = torch.tanh(q_proj[:, :, rows, None, :] + k_proj[:, :, None, :, :])   # (B, H, r, M, a)
        scores = hidden @ score_vector                                                # (B, H, r, M)
        if causal:
            key_index = torch.arange(kv_len)
            allowed = key_index[None, :] <= rows[:, None] + (kv_len - seq_len)        # (r, M)
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        blocks.append(torch.nan_to_num(weights, nan=0.0))                             # no visible key: 0
    return torch.cat(blocks, dim=-2)


def weight_for(case: Case, tag: int, shape: tuple[int, ...], std: float, device=None, dtype=None) -> torch.Tensor:
    """A seeded weight rounded to the case dtype (what the kernel sees), then moved/cast as asked."""
    weight = seeded_weight(case, tag, shape, std).to(torch_dtype(case.dtype))
    return weight.to(device=device or "cpu", dtype=dtype or weight.dtype)


class AdditiveAttention(Variant):
    name = "additive"
    family = "additive"
    computes = "additive_attention"
    description = "Bahdanau attention vᵀtanh(W₁q + W₂k), chunked over queries (no N×M×attn_dim tensor)"
    params = {"attn_dim": 64, "chunk": 0}

    W1_TAG, W2_TAG, V_TAG = 101, 102, 103

    def unsupported_reasons(self, case: Case) -> list[str]:
        return super().unsupported_reasons(case) + knob_reasons(case.params, self.params)

    def _knobs(self, case: Case) -> tuple[int, int]:
        knobs = {**self.params, **case.params}
        return knobs["attn_dim"], knobs["chunk"]

    def _weights(self, case: Case, device=None, dtype=None):
        attn_dim, _ = self._knobs(case)
        d = case.head_dim
        w1 = weight_for(case, self.W1_TAG, (attn_dim, d), 1 / math.sqrt(d), device, dtype)
        w2 = weight_for(case, self.W2_TAG, (attn_dim, d), 1 / math.sqrt(d), device, dtype)
        score_vector = weight_for(case, self.V_TAG, (attn_dim,), 1 / math.sqrt(attn_dim), device, dtype)
        return w1, w2, score_vector

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        attn_dim, chunk = self._knobs(case)
        rows = chunk_rows(case, attn_dim, chunk)
        w1, w2, score_vector = self._weights(case, device=q.device)

        def forward() -> torch.Tensor:
            q_proj = torch.matmul(q, w1.t())                     # (B, H, N, a)
            k_proj = torch.matmul(k, w2.t())                     # (B, H, M, a)
            return chunked_additive_attention(q_proj, k_proj, score_vector, v, case.causal, rows)

        return forward

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        w1, w2, score_vector = self._weights(case, dtype=torch.float64)
        query_index = torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)
        return additive_reference_weights(q @ w1.T, k @ w2.T, score_vector, query_index, case.causal)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        w1, w2, score_vector = self._weights(case, dtype=torch.float64)
        query_index = torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)
        weights = additive_reference_weights(q @ w1.T, k @ w2.T, score_vector, query_index, case.causal)
        return weights @ v                                       # (B, H, R, d)

    def flops(self, case: Case) -> int:
        attn_dim, _ = self._knobs(case)
        bh = case.batch * case.heads
        projections = 2 * bh * (case.seq_len + case.kv_len) * case.head_dim * attn_dim
        return additive_flops(case, attn_dim, projections)

    def memory_model(self, case: Case) -> int:
        attn_dim, chunk = self._knobs(case)
        return additive_memory_model(case, attn_dim, chunk_rows(case, attn_dim, chunk))


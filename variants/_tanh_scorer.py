"""The chunked tanh scorer that additive (Bahdanau) and luong-concat share.

    score[b, h, i, j] = Σₐ v[a] · tanh(q_proj[b, h, i, a] + k_proj[b, h, j, a])
    out[b, h, i]      = Σⱼ softmax_j(score[b, h, i, :]) · V[b, h, j]

with q_proj = q W_qᵀ (B, H, N, a) and k_proj = k W_kᵀ (B, H, M, a). Bahdanau's
W₁q + W₂k and Luong's concat W[q; k] = W[:, :d] q + W[:, d:] k are both this
function; the two variants differ only in how their weights are drawn
(`ChunkedTanhScorer._weights`). See `attnbench.variants.additive` for the cost, the
chunking and the checkpointed backward.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from attnbench import (
    DEFAULT_TOLERANCES,
    AttentionInputs,
    Case,
    Knob,
    Tolerance,
    Variant,
    causal_mask,
    causal_visible_pairs,
    seeded_weight,
    torch_dtype,
)

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


# The chunked scorer's knobs, shared with luong-concat.
SCORER_KNOBS = {
    "attn_dim": Knob(int, default=64, minimum=1, doc="a, the width of the tanh layer (W₁, W₂: a × d)"),
    "chunk": Knob(int, default=0, minimum=0, doc="query rows per chunk; 0 = auto (a tanh tensor under 128 MiB)"),
}


def _additive_chunk(q_proj: torch.Tensor, k_proj: torch.Tensor, score_vector: torch.Tensor,
                    values: torch.Tensor, allowed: torch.Tensor | None, blind_rows: bool = False,
                    workspace: torch.Tensor | None = None) -> torch.Tensor:
    """One chunk of rows: q_proj (B, H, c, a), k_proj (B, H, M', a), values (B, H, M', d) -> (B, H, c, d).

    `allowed` is the chunk's slice (c, M') of the causal mask, or None when not causal;
    `blind_rows` says some of its rows see no key (a causal case with kv_len < seq_len).

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
    if allowed is not None:
        # A finite fill keeps rows that see no key free of NaN (also in backward); they are zeroed below.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if scores.dtype != torch.float64 else None)
    del scores
    if blind_rows:
        weights = weights * allowed.any(dim=-1).to(weights.dtype)[:, None]   # rows that see no key give 0
    return torch.matmul(weights.to(values.dtype), values)        # (B, H, c, d)


def chunked_additive_attention(q_proj: torch.Tensor, k_proj: torch.Tensor, score_vector: torch.Tensor,
                               values: torch.Tensor, causal: bool, rows_per_chunk: int,
                               allowed: torch.Tensor | None = None) -> torch.Tensor:
    """softmax_j(vᵀ tanh(q_proj[i] + k_proj[j])) · values, `rows_per_chunk` query rows at a time.

    q_proj (B, H, N, a), k_proj (B, H, M, a), score_vector (a,), values (B, H, M, d) -> (B, H, N, d).
    `allowed` is the (N, M) causal mask (`attnbench.causal_mask`); built here when causal and not given,
    so a timed forward passes the one its `prepare` built.
    """
    batch, heads, seq_len, _ = q_proj.shape
    kv_len, head_dim = values.shape[-2], values.shape[-1]
    offset = kv_len - seq_len
    if causal and allowed is None:
        allowed = causal_mask(seq_len, kv_len, device=q_proj.device)              # (N, M)
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
                    values[:, :, :visible], allowed[start:stop, :visible] if causal else None,
                    causal and start + offset < 0)
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
            allowed = causal_mask(seq_len, kv_len, rows=rows)                         # (r, M)
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        blocks.append(torch.nan_to_num(weights, nan=0.0))                             # no visible key: 0
    return torch.cat(blocks, dim=-2)


def weight_for(case: Case, tag: int, shape: tuple[int, ...], std: float, device=None, dtype=None) -> torch.Tensor:
    """A seeded weight rounded to the case dtype (what the kernel sees), then moved/cast as asked."""
    weight = seeded_weight(case, tag, shape, std).to(torch_dtype(case.dtype))
    return weight.to(device=device or "cpu", dtype=dtype or weight.dtype)


class ChunkedTanhScorer(Variant):
    """A variant whose forward is `chunked_additive_attention` over two projections.

    Subclasses give `_weights(case, device, dtype) -> (W_q (a, d), W_k (a, d), v (a,))`;
    the knobs, the forward, the float64 reference, FLOPs and memory come from here.
    """

    knobs = SCORER_KNOBS
    # The gradients flow back through tanh of low-precision scores: observed up to rel_l2 1.8e-2 in
    # bfloat16 and 2.2e-3 in float16 (seq_len 64-512); the outputs stay within the defaults.
    tolerances = {
        "float16": Tolerance(**{**DEFAULT_TOLERANCES["float16"].to_dict(), "grad_rel_l2": 1.5e-2}),
        "bfloat16": Tolerance(**{**DEFAULT_TOLERANCES["bfloat16"].to_dict(), "grad_rel_l2": 1e-1}),
    }

    def _weights(self, case: Case, device=None, dtype=None):
        raise NotImplementedError

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        attn_dim, chunk = self.knob_values(case, "attn_dim", "chunk")
        rows = chunk_rows(case, attn_dim, chunk)
        w_query, w_key, score_vector = self._weights(case, device=q.device)
        w_query, w_key = w_query.t().contiguous(), w_key.t().contiguous()           # (d, a) each
        allowed = causal_mask(case.seq_len, case.kv_len, device=q.device) if case.causal else None   # (N, M)

        def forward() -> torch.Tensor:
            q_proj = torch.matmul(q, w_query)                                       # (B, H, N, a)
            k_proj = torch.matmul(k, w_key)                                         # (B, H, M, a)
            return chunked_additive_attention(q_proj, k_proj, score_vector, v, case.causal, rows, allowed)

        return forward

    def _reference_weights(self, case: Case, q: torch.Tensor, k: torch.Tensor, rows) -> torch.Tensor:
        w_query, w_key, score_vector = self._weights(case, dtype=torch.float64)
        query_index = torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)
        return additive_reference_weights(q @ w_query.T, k @ w_key.T, score_vector, query_index, case.causal)

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        return self._reference_weights(case, q, k, rows)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        return self._reference_weights(case, q, k, rows) @ v                       # (B, H, R, d)

    def flops(self, case: Case) -> int:
        attn_dim, = self.knob_values(case, "attn_dim")
        projections = 2 * case.batch * case.heads * (case.seq_len + case.kv_len) * case.head_dim * attn_dim
        return additive_flops(case, attn_dim, projections)

    def memory_model(self, case: Case) -> int:
        attn_dim, chunk = self.knob_values(case, "attn_dim", "chunk")
        return additive_memory_model(case, attn_dim, chunk_rows(case, attn_dim, chunk))

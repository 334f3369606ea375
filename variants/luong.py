"""Luong (multiplicative) attention: the dot, general, concat and local-p scores.

From Luong, Pham and Manning (2015), "Effective Approaches to Attention-based
Neural Machine Translation", with decoder state h_t as the query and encoder
states h̄_s as the keys:

    dot      score(q, k) = qᵀk                       (no 1/√d scaling)
    general  score(q, k) = qᵀ W k                    (W: d × d)
    concat   score(q, k) = vᵀ tanh(W [q; k])         (W: attn_dim × 2d, v: attn_dim)
    local-p  p = S · sigmoid(v_pᵀ tanh(W_p q)),  window [p − D, p + D],
             a(s) = softmax_window(score(q, k_s)) · exp(−(s − p)² / (2σ²)),  σ = D/2

    out[i] = Σ_s a_i(s) · V[s]   (for dot, general, concat: a = softmax over all keys)

How a case maps onto the family: each (batch, head) pair is one sentence pair,
q (B, H, N, d) the N decoder states, k (B, H, M, d) the M encoder states and v
(B, H, M, d) their values. Weights (W, W_p, v_p) are seeded and shared by every
batch element and head.

Causal, per score:
- dot, general, concat: key j is visible to query i when j <= i + (M − N), the
  attnbench convention; a query that sees no key outputs 0.
- local-p: the predicted position is taken over the keys the query may see:
  S_i = clamp(i + M − N + 1, 0, M) instead of S = M, and window positions at
  or beyond S_i are masked. Without a mask S_i = M for every query.

Implementations: dot and general call `scaled_dot_product_attention` with
scale 1 (general first applies W to the keys once, k' = k Wᵀ, so qᵀWk = q·k');
concat is additive's chunked scorer (`attnbench.variants._tanh_scorer`; W = [W_q | W_k], so W[q; k] = W_q q + W_k k);
local-p gathers the 2D+1 keys and values of each query's window (no N×M matrix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnbench import (
    DEFAULT_TOLERANCES,
    AttentionInputs,
    Case,
    Knob,
    Tolerance,
    Variant,
    attention_flops,
    causal_mask,
    query_positions,
    softmax_attention,
)
from attnbench.variants._tanh_scorer import ChunkedTanhScorer, weight_for

GENERAL_TAG = 201
CONCAT_W_TAG, CONCAT_V_TAG = 301, 302
LOCAL_WP_TAG, LOCAL_VP_TAG = 401, 402
# local-p gathers at most this many elements of windowed keys per chunk of queries.
LOCAL_CHUNK_ELEMENTS = 1 << 24
# The float64 references hold (B, H, rows, M) score matrices for this many elements at a time.
REFERENCE_BLOCK_ELEMENTS = 1 << 22


def _sdpa_causal_mask(case: Case, device) -> torch.Tensor | None:
    """The explicit (N, M) mask SDPA needs when causal with M > N (its is_causal aligns at the top left), else None."""
    if case.causal and case.kv_len > case.seq_len:
        return causal_mask(case.seq_len, case.kv_len, device=device)
    return None


def _dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                           allowed: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ) v with no scaling, end-aligned causal mask; rows that see no key give 0.  (B, H, N, d)

    `allowed` is `_sdpa_causal_mask`'s (N, M) mask, built in `prepare`.
    """
    seq_len, kv_len = q.shape[-2], k.shape[-2]
    if not causal or seq_len == kv_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1.0)
    if kv_len < seq_len:
        # The first N − M queries see nothing; the last M see a square causal block (top-left = end aligned).
        hidden = seq_len - kv_len
        tail = F.scaled_dot_product_attention(q[:, :, hidden:], k, v, is_causal=True, scale=1.0)
        return F.pad(tail, (0, 0, hidden, 0))
    if allowed is None:
        raise ValueError("a causal case with kv_len > seq_len needs the (N, M) mask from _sdpa_causal_mask")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0)


def _reference_softmax_weights(scores: torch.Tensor, query_index: torch.Tensor, seq_len: int,
                               causal: bool) -> torch.Tensor:
    if causal:
        allowed = causal_mask(seq_len, scores.shape[-1], rows=query_index)             # (R, M)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)


def _rows(case: Case, rows) -> torch.Tensor:
    return torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)


def _by_row_blocks(case: Case, rows, output_of_rows) -> torch.Tensor:
    """The reference's rows, a block at a time, so its float64 (B, H, rows, M) temporaries stay bounded."""
    query_index = _rows(case, rows)
    step = max(1, REFERENCE_BLOCK_ELEMENTS // (case.batch * case.heads * case.kv_len))
    return torch.cat([output_of_rows(query_index[start:start + step])
                      for start in range(0, len(query_index), step)], dim=-2)       # (B, H, R, d)


def _float64_cpu(inputs: AttentionInputs):
    return tuple(t.detach().to("cpu", torch.float64) for t in inputs.tensors())


class _Luong(Variant):
    family = "luong"
    # The output goes through a learned d×2d layer and tanh, so errors (and dq, dk, dv: max_rel up to 0.27
    # in bfloat16, luong-local's Gaussian weighting) are larger than plain softmax attention's. Observed
    # on seeded inputs (seq_len 64-1024, qk_std up to 4) and MiniLM's q, k, v (rel_l2 / max_rel): float32
    # 2.5e-6 / 1.5e-5 (grads 1.8e-5 / 2.6e-5), float16 2.4e-3 / 1.1e-2 (1.0e-2 / 4.1e-2), bfloat16
    # 2.0e-2 / 1.1e-1 (7.9e-2 / 2.7e-1).
    tolerances = {
        "float64": DEFAULT_TOLERANCES["float64"].scaled(10),
        "float32": Tolerance(rel_l2=1e-5, max_rel=5e-5, grad_rel_l2=5e-5, grad_max_rel=1e-4),
        "float16": Tolerance(rel_l2=8e-3, max_rel=5e-2, grad_rel_l2=2e-2, grad_max_rel=2e-1),
        "bfloat16": Tolerance(rel_l2=6e-2, max_rel=4e-1, grad_rel_l2=1.5e-1, grad_max_rel=1.0),
    }

    def _sdpa_memory(self, case: Case) -> int:
        """Output, SDPA's float32 log-sum-exp, and the explicit mask when causal with M > N."""
        output = case.batch * case.heads * case.seq_len * case.head_dim * case.element_bytes
        logsumexp = case.batch * case.heads * case.seq_len * 4
        mask = case.seq_len * case.kv_len if case.causal and case.kv_len > case.seq_len else 0
        padded = output if case.causal and case.kv_len < case.seq_len else 0
        return output + logsumexp + mask + padded


class LuongDot(_Luong):
    name = "luong-dot"
    computes = "luong_dot_attention"
    description = "Luong dot score qᵀk (no scaling), through SDPA with scale=1"

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        allowed = _sdpa_causal_mask(case, q.device)                                 # (N, M) or None
        return lambda: _dot_product_attention(q, k, v, case.causal, allowed)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, scale=1.0)

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = _float64_cpu(inputs)
        query_index = _rows(case, rows)
        scores = q[:, :, query_index] @ k.transpose(-2, -1)                        # (B, H, R, M)
        return _reference_softmax_weights(scores, query_index, case.seq_len, case.causal)

    def flops(self, case: Case) -> int:
        return attention_flops(case)

    def memory_model(self, case: Case) -> int:
        return self._sdpa_memory(case)


class LuongGeneral(_Luong):
    name = "luong-general"
    computes = "luong_general_attention"
    description = "Luong general score qᵀWk: W applied once to the keys, then SDPA with scale=1"

    def _weight(self, case: Case, device=None, dtype=None) -> torch.Tensor:
        d = case.head_dim
        return weight_for(case, GENERAL_TAG, (d, d), 1 / math.sqrt(d), device, dtype)

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        weight_t = self._weight(case, device=q.device).t()                           # (d, d): Wᵀ
        allowed = _sdpa_causal_mask(case, q.device)                                 # (N, M) or None

        def forward() -> torch.Tensor:
            k_general = torch.matmul(k, weight_t)                                   # (B, H, M, d): k'ⱼ = W kⱼ
            return _dot_product_attention(q, k_general, v, case.causal, allowed)

        return forward

    def _scores(self, case: Case, q: torch.Tensor, k: torch.Tensor, query_index: torch.Tensor) -> torch.Tensor:
        weight = self._weight(case, dtype=torch.float64)
        return torch.einsum("bhnd,de,bhme->bhnm", q[:, :, query_index], weight, k)   # qᵢᵀ W kⱼ  (B, H, R, M)

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = _float64_cpu(inputs)
        query_index = _rows(case, rows)
        return _reference_softmax_weights(self._scores(case, q, k, query_index), query_index,
                                          case.seq_len, case.causal)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()

        def block_output(query_index: torch.Tensor) -> torch.Tensor:
            weights = _reference_softmax_weights(self._scores(case, q, k, query_index), query_index,
                                                 case.seq_len, case.causal)
            return weights @ v                                                       # (B, H, r, d)

        return _by_row_blocks(case, rows, block_output)

    def flops(self, case: Case) -> int:
        key_projection = 2 * case.batch * case.heads * case.kv_len * case.head_dim ** 2
        return key_projection + attention_flops(case)

    def memory_model(self, case: Case) -> int:
        k_general = case.batch * case.heads * case.kv_len * case.head_dim * case.element_bytes
        return k_general + self._sdpa_memory(case)


class LuongConcat(ChunkedTanhScorer, _Luong):
    name = "luong-concat"
    computes = "luong_concat_attention"
    description = "Luong concat score vᵀtanh(W[q;k]), chunked over queries like additive"

    def _weights(self, case: Case, device=None, dtype=None):
        """W's query and key halves and v: W [q; k] = W[:, :d] q + W[:, d:] k, never concatenated."""
        attn_dim, = self.knob_values(case, "attn_dim")
        d = case.head_dim
        weight = weight_for(case, CONCAT_W_TAG, (attn_dim, 2 * d), 1 / math.sqrt(2 * d), device, dtype)
        score_vector = weight_for(case, CONCAT_V_TAG, (attn_dim,), 1 / math.sqrt(attn_dim), device, dtype)
        return weight[:, :d], weight[:, d:], score_vector                          # W_q, W_k, v


def visible_key_counts(seq_len: int, kv_len: int, causal: bool, device=None) -> torch.Tensor:
    """S_i: how many keys query i may see (M without a mask).  (N,)"""
    if not causal:
        return torch.full((seq_len,), kv_len, device=device)
    return (query_positions(seq_len, kv_len, device=device) + 1).clamp(0, kv_len)


def predicted_positions(q: torch.Tensor, w_p: torch.Tensor, v_p: torch.Tensor,
                        visible: torch.Tensor) -> torch.Tensor:
    """p = S_i · sigmoid(v_pᵀ tanh(W_p q)), in float64.  q (B, H, R, d), visible (R,) -> (B, H, R)

    Float64 on purpose: the window's centre is round(p), a discontinuous choice,
    and a float32 or bfloat16 p (resolution 2⁻⁸·S in bfloat16) would move windows
    away from the reference's. The cost is O(N·d·predictor_dim), small next to the window.
    """
    hidden = torch.tanh(q.to(torch.float64) @ w_p.to(torch.float64).T)             # (B, H, R, dp)
    return visible.to(torch.float64) * torch.sigmoid(hidden @ v_p.to(torch.float64))


class LuongLocal(_Luong):
    name = "luong-local"
    computes = "luong_local_p_attention"
    description = "Luong local-p: predicted position, 2D+1 window gathered per query, Gaussian-weighted"
    knobs = {
        "window": Knob(int, default=32, minimum=1, doc="D, the half-width: each query sees keys [p − D, p + D]"),
        "score": Knob(str, default="general", choices=("general", "dot"), doc="the score inside the window"),
        "predictor_dim": Knob(int, default=64, minimum=1, doc="the width of W_p in p = S·σ(v_pᵀ tanh(W_p q))"),
        "chunk": Knob(int, default=0, minimum=0, doc="query rows per chunk; 0 = auto"),
    }

    def _weights(self, case: Case, device=None, dtype=None):
        knobs = self.knob_values(case)
        d, dp = case.head_dim, knobs["predictor_dim"]
        w_p = weight_for(case, LOCAL_WP_TAG, (dp, d), 1 / math.sqrt(d), device, dtype)
        # v_p's spread puts predicted positions over most of the sequence, not only its middle.
        v_p = weight_for(case, LOCAL_VP_TAG, (dp,), 2 / math.sqrt(dp), device, dtype)
        general = (weight_for(case, GENERAL_TAG, (d, d), 1 / math.sqrt(d), device, dtype)
                   if knobs["score"] == "general" else None)
        return w_p, v_p, general

    def _rows_per_chunk(self, case: Case) -> int:
        knobs = self.knob_values(case)
        if knobs["chunk"] > 0:
            return min(knobs["chunk"], case.seq_len)
        width = 2 * knobs["window"] + 1
        per_row = case.batch * case.heads * width * case.head_dim
        return max(1, min(case.seq_len, LOCAL_CHUNK_ELEMENTS // per_row))

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        knobs = self.knob_values(case)
        half_width = knobs["window"]
        sigma = half_width / 2
        rows_per_chunk = self._rows_per_chunk(case)
        w_p, v_p, general = self._weights(case, device=q.device)
        # the predictor runs in float64 (see predicted_positions): its weights are cast once, here
        w_p, v_p = w_p.to(torch.float64), v_p.to(torch.float64)                      # (dp, d), (dp,)
        general_t = general.t() if general is not None else None                      # (d, d): Wᵀ
        batch, heads, seq_len, head_dim = q.shape
        kv_len = k.shape[-2]
        visible = visible_key_counts(seq_len, kv_len, case.causal, device=q.device)    # (N,)
        visible_float = visible.to(torch.float64)                                      # (N,)
        offsets = torch.arange(-half_width, half_width + 1, device=q.device)           # (W,)
        # Row r of the flattened (B·H·M, d) keys is key (b, h, s) at r = (b·H + h)·M + s.
        sequence_start = (torch.arange(batch * heads, device=q.device) * kv_len).view(batch, heads, 1, 1)

        def forward() -> torch.Tensor:
            keys = torch.matmul(k, general_t) if general_t is not None else k         # (B, H, M, d)
            flat_keys = keys.reshape(batch * heads * kv_len, head_dim)
            flat_values = v.reshape(batch * heads * kv_len, head_dim)
            positions = predicted_positions(q, w_p, v_p, visible_float)               # (B, H, N) float64
            pieces = []
            for start in range(0, seq_len, rows_per_chunk):
                stop = min(seq_len, start + rows_per_chunk)
                p = positions[:, :, start:stop, None]                                 # (B, H, c, 1)
                window = torch.floor(p.detach() + 0.5).long() + offsets               # (B, H, c, W)
                valid = (window >= 0) & (window < visible[start:stop, None])          # (B, H, c, W)
                index = (sequence_start + window.clamp(0, kv_len - 1)).view(-1)       # (B·H·c·W,)
                shape = (batch, heads, stop - start, offsets.numel(), head_dim)
                window_keys = flat_keys.index_select(0, index).view(shape)           # (B, H, c, W, d)
                scores = torch.matmul(window_keys, q[:, :, start:stop, :, None]).squeeze(-1)   # (B, H, c, W)
                del window_keys
                scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
                align = torch.softmax(scores, dim=-1, dtype=torch.float32 if scores.dtype != torch.float64 else None)
                align = align * valid.any(dim=-1, keepdim=True)                      # a window with no key: 0
                gaussian = torch.exp(-(window - p) ** 2 / (2 * sigma ** 2))           # (B, H, c, W) float64
                weights = (align * gaussian).to(v.dtype)                             # (B, H, c, W)
                window_values = flat_values.index_select(0, index).view(shape)       # (B, H, c, W, d)
                pieces.append(torch.matmul(weights.unsqueeze(-2), window_values).squeeze(-2))   # (B, H, c, d)
                del window_values
            return torch.cat(pieces, dim=-2) if len(pieces) > 1 else pieces[0]

        return forward

    def _reference_weights(self, case: Case, q: torch.Tensor, k: torch.Tensor, rows) -> torch.Tensor:
        """The full (B, H, R, M) weights from the formula: window mask, softmax inside it, Gaussian."""
        knobs = self.knob_values(case)
        half_width = knobs["window"]
        sigma = half_width / 2
        w_p, v_p, general = self._weights(case, dtype=torch.float64)
        query_index = _rows(case, rows)
        q = q[:, :, query_index]                                                      # (B, H, R, d)
        visible = visible_key_counts(case.seq_len, case.kv_len, case.causal)[query_index]   # (R,)
        p = predicted_positions(q, w_p, v_p, visible)[..., None]                      # (B, H, R, 1)
        s = torch.arange(case.kv_len, dtype=torch.float64)                           # (M,)
        centre = torch.floor(p + 0.5)
        in_window = ((s - centre).abs() <= half_width) & (s < visible[:, None])       # (B, H, R, M)
        keys = k @ general.T if general is not None else k                            # k'ⱼ = W kⱼ
        scores = (q @ keys.transpose(-2, -1)).masked_fill(~in_window, float("-inf"))  # (B, H, R, M)
        align = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
        return align * torch.exp(-(s - p) ** 2 / (2 * sigma ** 2))

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = _float64_cpu(inputs)
        return self._reference_weights(case, q, k, rows)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        return _by_row_blocks(case, rows, lambda block: self._reference_weights(case, q, k, block) @ v)

    def flops(self, case: Case) -> int:
        knobs = self.knob_values(case)
        bh, d, dp = case.batch * case.heads, case.head_dim, knobs["predictor_dim"]
        width = 2 * knobs["window"] + 1
        keys = 2 * bh * case.kv_len * d * d if knobs["score"] == "general" else 0
        predictor = bh * case.seq_len * (2 * d * dp + dp + 2 * dp)                    # W_p q, tanh, v_pᵀ
        window = bh * case.seq_len * width * (2 * d + 2 * d)                          # scores, then weights·V
        return keys + predictor + window

    def memory_model(self, case: Case) -> int:
        """Keys k' (general), the float64 predictor, and one chunk's gathered windows and index."""
        knobs = self.knob_values(case)
        bh, d, e = case.batch * case.heads, case.head_dim, case.element_bytes
        width = 2 * knobs["window"] + 1
        rows = self._rows_per_chunk(case)
        keys = bh * case.kv_len * d * e if knobs["score"] == "general" else 0
        predictor = bh * case.seq_len * (d + knobs["predictor_dim"] + 2) * 8
        output = 2 * bh * case.seq_len * d * e                                       # pieces, then their cat
        window_elements = bh * rows * width
        chunk = window_elements * (d * e + 8 * 4 + 4 * 3 + e)                         # gathered rows, indices, scores
        return keys + predictor + output + chunk


"""FlashAttention's online softmax, written in plain PyTorch over key and query blocks.

out = softmax(q kᵀ / √d + mask) v with q (B, H, N, d), k (B, Hkv, M, d) and
v (B, Hkv, M, d_v), SDPA's own layout, computed without ever holding an N×M matrix:

    for each block of `query_block` queries (rows i):
        m_i = −∞, l_i = 0, acc_i = 0
        for each block of `block` keys (columns j) the block can see:
            s    = q_i k_jᵀ / √d                         (block × block)
            m'   = max(m_i, rowmax(s))
            p    = exp(s − m')
            l_i  = l_i · exp(m_i − m') + rowsum(p)
            acc_i = acc_i · exp(m_i − m') + p v_j
            m_i  = m'
        out_i = acc_i / l_i,  logsumexp_i = m_i + log l_i

Grouped heads (GQA, MQA: Hkv < H, query head h reads key/value head
h // (H // Hkv)): each query block is laid out as (B, Hkv, G·bq, d), the G
query heads of a group stacked as rows, so one matmul against the group's
(B, Hkv, d, bk) keys serves all of them; k and v are never repeated per head.
Row g·bq + t of a grouped block is query q_start + t of head kv·G + g, so the
mask of a block is one (bq, bk) matrix shared by the G heads.

Masks, with queries aligned at the end of the keys (query i sits at key
position i' = i + M − N): causal (j <= i') and the `sliding_window:W` mask
(|i' − j| <= W, and j <= i' if causal). Each query block only visits the
key range its queries can see, [first i' − W, last i' + 1) under a causal
window, so key tiles wholly outside the band or beyond the diagonal are
skipped rather than masked, and only tiles crossing an edge of the band are
masked. A query that sees no key outputs 0.

float16 and bfloat16 inputs are computed in float32 block by block (as flash
kernels accumulate in float32); the output is cast back to the input dtype.

Blocks: `block` keys (default 256) by `query_block` queries (default 1024).
Each block pair costs about ten PyTorch calls, and on a shared CPU every call's
thread barrier can stall; 1024×256 keeps the 4096-long case at 64 block pairs
while the (1024, 256) scores still fit in cache, and was as fast as 256×256.

A ragged batch (`lengths`) runs ``packed``, as flash-attn's varlen entry
does: the sequences' tokens end to end (1, H, Σq, d) with cumulative offsets
cu_seqlens, each sequence's tiles visited within its own offsets
(`flash_tiled_varlen`), so no tile spans two sequences and none is padding.

Memory: the forward holds the output, the per-row statistics (B, H, N) and
one block pair's scores; O(N·d + query_block·block) beyond the inputs, never O(N·M).
Backward is FlashAttention-2's, in a custom autograd Function: it saves only
q, k, v, the output and the log-sum-exp, recomputes each block's
probabilities from the log-sum-exp, and accumulates dq, dk, dv block by block
(dk and dv summed over the heads of a group by the grouped matmuls), so the
backward's extra memory is the three input-sized gradients, the row sums
D = rowsum(dO ∘ O) (B, H, N) and one block's temporaries.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from attnbench import (
    AttentionInputs,
    Case,
    Knob,
    Variant,
    attention_flops,
    band_mask_mod,
    case_mask_matrix,
    case_mask_mod,
    case_window,
    causal_mask_mod,
    is_ragged,
    packed_inputs,
    ragged_batch,
    ragged_execution,
    softmax_attention,
)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype



def key_range(q_start: int, q_stop: int, offset: int, kv_len: int, causal: bool,
              window: int | None) -> tuple[int, int]:
    """Keys [start, stop) hold every key some query in [q_start, q_stop) can see; empty when stop <= start.

    The block's queries sit at key positions q_start + offset .. q_stop - 1 + offset.
    """
    first, last = q_start + offset, q_stop - 1 + offset
    start = 0 if window is None else first - window
    if causal:
        stop = last + 1
    else:
        stop = kv_len if window is None else last + window + 1
    return max(0, start), max(0, min(kv_len, stop))


def _sees(position: int, key: int, causal: bool, window: int | None) -> bool:
    """Whether a query at key position `position` sees `key` (the causal and sliding-window rules)."""
    return (not causal or key <= position) and (window is None or abs(position - key) <= window)


def _block_hidden(q_start: int, q_stop: int, k_start: int, k_stop: int, seq_len: int, kv_len: int,
                  causal: bool, window: int | None, device) -> torch.Tensor | None:
    """(bq, bk) bool, True where a key of the block is hidden from a query; None when the block is fully visible.

    Each query sees one interval of keys, and the intervals move right with the query, so
    the block is fully visible when its top-right and bottom-left corners are.
    """
    offset = kv_len - seq_len
    if (_sees(q_start + offset, k_stop - 1, causal, window)
            and _sees(q_stop - 1 + offset, k_start, causal, window)):
        return None
    mask_mod = (band_mask_mod(seq_len, kv_len, window, causal=causal) if window is not None
                else causal_mask_mod(seq_len, kv_len))
    rows = torch.arange(q_start, q_stop, device=device)
    cols = torch.arange(k_start, k_stop, device=device)
    return ~mask_mod(None, None, rows[:, None], cols[None, :])                          # (bq, bk)


def _grouped(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(B, H, R, c) -> (B, Hkv, G·R, c): the G query heads of each key/value head stacked as rows."""
    return x.reshape(x.shape[0], kv_heads, -1, x.shape[-1])


def _ungrouped(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Hkv, G·R, c) -> (B, H, R, c), the inverse of `_grouped`."""
    return x.reshape(x.shape[0], heads, -1, x.shape[-1])


def _hide_(scores: torch.Tensor, hidden: torch.Tensor, groups: int) -> None:
    """Set grouped scores (B, Hkv, G·bq, bk) to −∞ in place where `hidden` (bq, bk) is True, for each of the G heads."""
    batch, kv_heads, rows, keys = scores.shape
    scores.view(batch, kv_heads, groups, rows // groups, keys).masked_fill_(hidden, float("-inf"))


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, block: int,
                  query_block: int | None = None,
                  window: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (B, H, N, d_v) in q's dtype and log-sum-exp (B, H, N) in the work dtype.

    q (B, H, N, d), k (B, Hkv, M, d), v (B, Hkv, M, d_v) with Hkv dividing H.
    """
    batch, heads, seq_len, head_dim = q.shape
    kv_heads, kv_len, value_dim = k.shape[1], k.shape[2], v.shape[-1]
    groups = heads // kv_heads
    offset = kv_len - seq_len
    work = _work_dtype(q.dtype)
    scale = 1.0 / math.sqrt(head_dim)
    out = torch.zeros(batch, heads, seq_len, value_dim, dtype=work, device=q.device)
    logsumexp = torch.full((batch, heads, seq_len), float("-inf"), dtype=work, device=q.device)
    query_block = query_block or block
    for q_start in range(0, seq_len, query_block):
        q_stop = min(seq_len, q_start + query_block)
        key_start, key_stop = key_range(q_start, q_stop, offset, kv_len, causal, window)
        if key_stop <= key_start:
            continue                                                                  # no query here sees a key
        q_block = _grouped(q[:, :, q_start:q_stop].to(work) * scale, kv_heads)       # (B, Hkv, G·bq, d)
        row_max = torch.full((*q_block.shape[:-1], 1), float("-inf"), dtype=work, device=q.device)
        row_sum = torch.zeros_like(row_max)                                           # (B, Hkv, G·bq, 1)
        acc = torch.zeros(*q_block.shape[:-1], value_dim, dtype=work, device=q.device)   # (B, Hkv, G·bq, d_v)
        for k_start in range(key_start, key_stop, block):
            k_stop = min(key_stop, k_start + block)
            scores = torch.matmul(q_block, k[:, :, k_start:k_stop].to(work).transpose(-2, -1))   # (B, Hkv, G·bq, bk)
            hidden = _block_hidden(q_start, q_stop, k_start, k_stop, seq_len, kv_len, causal, window, q.device)
            if hidden is not None:
                _hide_(scores, hidden, groups)
            new_max = torch.maximum(row_max, scores.amax(dim=-1, keepdim=True))
            safe_max = new_max.masked_fill(new_max == float("-inf"), 0.0)             # rows with no key yet
            probs = scores.sub_(safe_max).exp_()                                      # p, in place of s
            rescale = (row_max - safe_max).exp_()                                     # exp(m − m'), 0 when m = −∞
            row_sum.mul_(rescale).add_(probs.sum(dim=-1, keepdim=True))
            acc.mul_(rescale).add_(torch.matmul(probs, v[:, :, k_start:k_stop].to(work)))   # (B, Hkv, G·bq, d_v)
            row_max = new_max
            del scores, probs
        seen = row_sum > 0
        out[:, :, q_start:q_stop] = _ungrouped(torch.where(seen, acc / row_sum, 0.0), heads)   # (B, H, bq, d_v)
        block_lse = torch.where(seen, row_max + row_sum.log(), float("-inf"))            # (B, Hkv, G·bq, 1)
        logsumexp[:, :, q_start:q_stop] = _ungrouped(block_lse, heads).squeeze(-1)
    return out.to(q.dtype), logsumexp


def flash_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   out: torch.Tensor, logsumexp: torch.Tensor, causal: bool, block: int,
                   query_block: int | None = None, window: int | None = None):
    """FlashAttention-2's backward: dq, dk, dv from probabilities recomputed block by block."""
    batch, heads, seq_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    offset = kv_len - seq_len
    work = _work_dtype(q.dtype)
    scale = 1.0 / math.sqrt(head_dim)
    grad_q = torch.zeros(q.shape, dtype=work, device=q.device)
    grad_k = torch.zeros(k.shape, dtype=work, device=q.device)
    grad_v = torch.zeros(v.shape, dtype=work, device=q.device)
    # D_i = rowsum(dO_i ∘ O_i) = Σ_j p_ij dp_ij, the softmax backward's per-row term.
    row_dot = (grad_out.to(work) * out.to(work)).sum(dim=-1, keepdim=True)           # (B, H, N, 1)
    # exp(s − lse) must be 0 for rows that see no key (lse = −∞): use +∞ there.
    safe_lse = logsumexp.masked_fill(logsumexp == float("-inf"), float("inf")).unsqueeze(-1)   # (B, H, N, 1)
    query_block = query_block or block
    for q_start in range(0, seq_len, query_block):
        q_stop = min(seq_len, q_start + query_block)
        key_start, key_stop = key_range(q_start, q_stop, offset, kv_len, causal, window)
        if key_stop <= key_start:
            continue
        q_block = _grouped(q[:, :, q_start:q_stop].to(work) * scale, kv_heads)       # (B, Hkv, G·bq, d)
        do_block = _grouped(grad_out[:, :, q_start:q_stop].to(work), kv_heads)       # (B, Hkv, G·bq, d_v)
        lse_block = _grouped(safe_lse[:, :, q_start:q_stop], kv_heads)                # (B, Hkv, G·bq, 1)
        dot_block = _grouped(row_dot[:, :, q_start:q_stop], kv_heads)                 # (B, Hkv, G·bq, 1)
        dq_block = torch.zeros_like(q_block)
        for k_start in range(key_start, key_stop, block):
            k_stop = min(key_stop, k_start + block)
            k_block = k[:, :, k_start:k_stop].to(work)                                # (B, Hkv, bk, d)
            v_block = v[:, :, k_start:k_stop].to(work)                                # (B, Hkv, bk, d_v)
            scores = torch.matmul(q_block, k_block.transpose(-2, -1))                 # (B, Hkv, G·bq, bk)
            hidden = _block_hidden(q_start, q_stop, k_start, k_stop, seq_len, kv_len, causal, window, q.device)
            if hidden is not None:
                _hide_(scores, hidden, groups)
            probs = scores.sub_(lse_block).exp_()                                     # p = exp(s − lse)
            grad_v[:, :, k_start:k_stop] += torch.matmul(probs.transpose(-2, -1), do_block)   # summed over G
            grad_probs = torch.matmul(do_block, v_block.transpose(-2, -1))            # dp = dO vᵀ
            grad_scores = probs.mul_(grad_probs.sub_(dot_block))                      # ds = p ∘ (dp − D)
            dq_block += torch.matmul(grad_scores, k_block)
            grad_k[:, :, k_start:k_stop] += torch.matmul(grad_scores.transpose(-2, -1), q_block)
            del scores, probs, grad_probs, grad_scores
        grad_q[:, :, q_start:q_stop] = _ungrouped(dq_block * scale, heads)           # (B, H, bq, d)
    return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)


class _FlashTiledFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, block: int, query_block: int, window: int | None):
        out, logsumexp = flash_forward(q, k, v, causal, block, query_block, window)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        ctx.causal, ctx.block, ctx.query_block, ctx.window = causal, block, query_block, window
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, logsumexp = ctx.saved_tensors
        grad_q, grad_k, grad_v = flash_backward(grad_out, q, k, v, out, logsumexp, ctx.causal, ctx.block,
                                                ctx.query_block, ctx.window)
        return grad_q, grad_k, grad_v, None, None, None, None


def flash_tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                          block: int = 256, query_block: int = 1024, window: int | None = None) -> torch.Tensor:
    """Softmax attention by online softmax over blocks; differentiable (FlashAttention-2 backward).

    q (B, H, N, d), k (B, Hkv, M, d), v (B, Hkv, M, d_v) -> (B, H, N, d_v); `window` is
    the sliding window W (|i' − j| <= W), None for none.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _FlashTiledFunction.apply(q, k, v, causal, block, query_block, window)
    return flash_forward(q, k, v, causal, block, query_block, window)[0]


def _tiled_pairs(seq_len: int, kv_len: int, query_block: int, causal: bool, window: int | None) -> int:
    """(query, key) pairs the tiles compute: each query block against every key of its key range."""
    pairs = 0
    for start in range(0, seq_len, query_block):
        stop = min(seq_len, start + query_block)
        key_start, key_stop = key_range(start, stop, kv_len - seq_len, kv_len, causal, window)
        pairs += (stop - start) * max(0, key_stop - key_start)
    return pairs


def flash_tiled_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: tuple[int, ...],
                       cu_seqlens_k: tuple[int, ...], causal: bool = False, block: int = 256,
                       query_block: int = 1024) -> torch.Tensor:
    """Packed sequences: q (1, H, Σq, d), k (1, Hkv, Σm, d), v (1, Hkv, Σm, d_v) -> (1, H, Σq, d_v).

    Sequence s holds query rows [cu_seqlens_q[s], cu_seqlens_q[s + 1]) and key
    rows [cu_seqlens_k[s], cu_seqlens_k[s + 1]); its tiles never leave them
    (causal aligned at the end of its own keys).
    """
    out = q.new_empty(*q.shape[:-1], v.shape[-1])                                     # (1, H, Σq, d_v)
    bounds = zip(cu_seqlens_q[:-1], cu_seqlens_q[1:], cu_seqlens_k[:-1], cu_seqlens_k[1:], strict=True)
    for q_start, q_stop, k_start, k_stop in bounds:
        out[:, :, q_start:q_stop] = flash_forward(q[:, :, q_start:q_stop], k[:, :, k_start:k_stop],
                                                  v[:, :, k_start:k_stop], causal, block, query_block)[0]
    return out


class FlashTiled(Variant):
    name = "flash-tiled"
    family = "flash"
    computes = "softmax_attention"
    description = ("online-softmax attention in plain PyTorch over key/query blocks, FlashAttention-2 backward; "
                   "grouped heads without copies, sliding windows by skipping key tiles")
    supports_gqa = True
    supports_v_head_dim = True
    supported_masks = ("sliding_window",)
    mask_reason = ("has no {kind} mask: its tiles follow the causal and sliding-window bounds only "
                   "(masks it takes: {masks}); use naive, sdpa-math or flex")
    score_mod_reason = "has no {kind} score mod (score mods it takes: {mods}); use naive or flex"
    supports_lengths = True
    supported_layouts = ("packed",)
    layout_reason = ("has no {layout} ragged layout: its tiles follow the causal and sliding-window bounds only; "
                     "use layout = packed (offsets, as flash-attn's varlen entry)")
    knobs = {
        "block": Knob(int, default=256, minimum=1, doc="keys per block (columns of one block's scores)"),
        "query_block": Knob(int, default=1024, minimum=1, doc="queries per block (rows of one block's scores)"),
    }

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()                             # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        block, query_block = self.knob_values(case, "block", "query_block")
        window = case_window(case)
        if is_ragged(case):
            batch, q, k, v = packed_inputs(case, q, k, v)      # (1, H, Σq, d), (1, Hkv, Σm, d), (1, Hkv, Σm, d_v)
            cu_q, cu_k = batch.cu_seqlens_q, batch.cu_seqlens_k
            return lambda: flash_tiled_varlen(q, k, v, cu_q, cu_k, case.causal, block, query_block)
        return lambda: flash_tiled_attention(q, k, v, case.causal, block, query_block, window)

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case, one_call=True)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, mask_mod=case_mask_mod(case))

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        query_index = torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)
        k = k.repeat_interleave(case.heads // case.kv_heads, dim=1)                         # (B, H, M, d)
        scores = q[:, :, query_index] @ k.transpose(-2, -1) / math.sqrt(case.head_dim)   # (B, H, R, M)
        allowed = case_mask_matrix(case, rows=query_index)                                  # (R, M), or None
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)

    def flops(self, case: Case) -> int:
        return attention_flops(case)

    def performed_flops(self, case: Case) -> int:
        """Each query block against every key of its key range: whole tiles across the diagonal and the band's edges."""
        _, query_block = self.knob_values(case, "block", "query_block")
        window = case_window(case)
        if is_ragged(case):                                    # each sequence's own tiles
            batch = ragged_batch(case)
            pairs = sum(_tiled_pairs(nq, nk, query_block, case.causal, None)
                        for nq, nk in zip(batch.queries, batch.keys, strict=True))
            return attention_flops(case, batch_pairs=pairs)
        return attention_flops(case, pairs=_tiled_pairs(case.seq_len, case.kv_len, query_block, case.causal, window))

    def memory_model(self, case: Case) -> int:
        """Output (work dtype, then its cast), log-sum-exp, and one query block's working set."""
        bh, d, dv = case.batch * case.heads, case.head_dim, case.v_head_dim
        block, query_block = self.knob_values(case, "block", "query_block")
        block, query_block = min(block, case.kv_len), min(query_block, case.seq_len)
        work = 8 if case.dtype == "float64" else 4
        output = bh * case.seq_len * dv * (work + (case.element_bytes if work != case.element_bytes else 0))
        logsumexp = bh * case.seq_len * work
        scores = bh * query_block * block * work                                       # s, then p in place
        rows = bh * query_block * (d + 3 * dv + 4) * work                              # q block; acc, p·v, acc/l; m, l
        keys = case.batch * case.kv_heads * block * (d + dv) * work if work != case.element_bytes else 0   # upcast k, v
        return output + logsumexp + scores + rows + keys

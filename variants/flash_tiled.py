"""FlashAttention's online softmax, written in plain PyTorch over key and query blocks.

out = softmax(q kᵀ / √d + mask) v with q (B, H, N, d) and k, v (B, H, M, d),
SDPA's own layout, computed without ever holding an N×M matrix:

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

Under a causal mask (query i sees keys j <= i + M − N) key blocks wholly
beyond a query block's last visible key are skipped, and only blocks crossing
the diagonal are masked. A query that sees no key outputs 0.

float16 and bfloat16 inputs are computed in float32 block by block (as flash
kernels accumulate in float32); the output is cast back to the input dtype.

Blocks: `block` keys (default 256) by `query_block` queries (default 1024).
Each block pair costs about ten PyTorch calls, and on a shared CPU every call's
thread barrier can stall; 1024×256 keeps the 4096-long case at 64 block pairs
while the (1024, 256) scores still fit in cache, and was as fast as 256×256.

Memory: the forward holds the output, the per-row statistics (B, H, N) and
one block pair's scores; O(N·d + query_block·block) beyond the inputs, never O(N·M).
Backward is FlashAttention-2's, in a custom autograd Function: it saves only
q, k, v, the output and the log-sum-exp, recomputes each block's
probabilities from the log-sum-exp, and accumulates dq, dk, dv block by block,
so the backward's extra memory is the three input-sized gradients, the
row sums D = rowsum(dO ∘ O) (B, H, N) and one block's temporaries.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from harness import (
    AttentionInputs,
    Case,
    Knob,
    Variant,
    attention_flops,
    causal_mask,
    softmax_attention,
)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _visible_key_stop(query_stop: int, offset: int, kv_len: int, causal: bool) -> int:
    """Keys [0, stop) hold every key some query in [.., query_stop) can see."""
    return max(0, min(kv_len, query_stop + offset)) if causal else kv_len


def _diagonal_mask(query_start: int, query_stop: int, key_start: int, key_stop: int,
                   offset: int, device) -> torch.Tensor | None:
    """True where a key in the block is hidden from a query; None when the block is fully visible."""
    if key_stop - 1 <= query_start + offset:
        return None
    rows = torch.arange(query_start, query_stop, device=device)
    cols = torch.arange(key_start, key_stop, device=device)
    return cols[None, :] > rows[:, None] + offset                                     # (bq, bk)


def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  block: int, query_block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (B, H, N, d) in q's dtype and log-sum-exp (B, H, N) in the work dtype."""
    batch, heads, seq_len, head_dim = q.shape
    kv_len = k.shape[-2]
    offset = kv_len - seq_len
    work = _work_dtype(q.dtype)
    scale = 1.0 / math.sqrt(head_dim)
    out = torch.zeros(batch, heads, seq_len, head_dim, dtype=work, device=q.device)
    logsumexp = torch.full((batch, heads, seq_len), float("-inf"), dtype=work, device=q.device)
    query_block = query_block or block
    for q_start in range(0, seq_len, query_block):
        q_stop = min(seq_len, q_start + query_block)
        key_stop = _visible_key_stop(q_stop, offset, kv_len, causal)
        if key_stop == 0:
            continue                                                                  # no query here sees a key
        q_block = q[:, :, q_start:q_stop].to(work) * scale                            # (B, H, bq, d)
        row_max = torch.full((batch, heads, q_stop - q_start, 1), float("-inf"), dtype=work, device=q.device)
        row_sum = torch.zeros_like(row_max)                                           # (B, H, bq, 1)
        acc = torch.zeros(batch, heads, q_stop - q_start, head_dim, dtype=work, device=q.device)
        for k_start in range(0, key_stop, block):
            k_stop = min(key_stop, k_start + block)
            scores = torch.matmul(q_block, k[:, :, k_start:k_stop].to(work).transpose(-2, -1))   # (B, H, bq, bk)
            if causal:
                hidden = _diagonal_mask(q_start, q_stop, k_start, k_stop, offset, q.device)
                if hidden is not None:
                    scores.masked_fill_(hidden, float("-inf"))
            new_max = torch.maximum(row_max, scores.amax(dim=-1, keepdim=True))
            safe_max = new_max.masked_fill(new_max == float("-inf"), 0.0)             # rows with no key yet
            probs = scores.sub_(safe_max).exp_()                                      # p, in place of s
            rescale = (row_max - safe_max).exp_()                                     # exp(m − m'), 0 when m = −∞
            row_sum.mul_(rescale).add_(probs.sum(dim=-1, keepdim=True))
            acc.mul_(rescale).add_(torch.matmul(probs, v[:, :, k_start:k_stop].to(work)))   # (B, H, bq, d)
            row_max = new_max
            del scores, probs
        seen = row_sum > 0
        out[:, :, q_start:q_stop] = torch.where(seen, acc / row_sum, 0.0)
        logsumexp[:, :, q_start:q_stop] = torch.where(seen, row_max + row_sum.log(), float("-inf")).squeeze(-1)
    return out.to(q.dtype), logsumexp


def flash_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   out: torch.Tensor, logsumexp: torch.Tensor, causal: bool, block: int,
                   query_block: int | None = None):
    """FlashAttention-2's backward: dq, dk, dv from probabilities recomputed block by block."""
    batch, heads, seq_len, head_dim = q.shape
    kv_len = k.shape[-2]
    offset = kv_len - seq_len
    work = _work_dtype(q.dtype)
    scale = 1.0 / math.sqrt(head_dim)
    grad_q = torch.zeros(q.shape, dtype=work, device=q.device)
    grad_k = torch.zeros(k.shape, dtype=work, device=q.device)
    grad_v = torch.zeros(v.shape, dtype=work, device=q.device)
    # D_i = rowsum(dO_i ∘ O_i) = Σ_j p_ij dp_ij, the softmax backward's per-row term.
    row_dot = (grad_out.to(work) * out.to(work)).sum(dim=-1, keepdim=True)           # (B, H, N, 1)
    # exp(s − lse) must be 0 for rows that see no key (lse = −∞): use +∞ there.
    safe_lse = logsumexp.masked_fill(logsumexp == float("-inf"), float("inf")).unsqueeze(-1)
    query_block = query_block or block
    for q_start in range(0, seq_len, query_block):
        q_stop = min(seq_len, q_start + query_block)
        key_stop = _visible_key_stop(q_stop, offset, kv_len, causal)
        if key_stop == 0:
            continue
        q_block = q[:, :, q_start:q_stop].to(work) * scale                            # (B, H, bq, d)
        do_block = grad_out[:, :, q_start:q_stop].to(work)                            # (B, H, bq, d)
        dq_block = torch.zeros_like(q_block)
        for k_start in range(0, key_stop, block):
            k_stop = min(key_stop, k_start + block)
            k_block = k[:, :, k_start:k_stop].to(work)                                # (B, H, bk, d)
            v_block = v[:, :, k_start:k_stop].to(work)
            scores = torch.matmul(q_block, k_block.transpose(-2, -1))                 # (B, H, bq, bk)
            if causal:
                hidden = _diagonal_mask(q_start, q_stop, k_start, k_stop, offset, q.device)
                if hidden is not None:
                    scores.masked_fill_(hidden, float("-inf"))
            probs = scores.sub_(safe_lse[:, :, q_start:q_stop]).exp_()                # p = exp(s − lse)
            grad_v[:, :, k_start:k_stop] += torch.matmul(probs.transpose(-2, -1), do_block)
            grad_probs = torch.matmul(do_block, v_block.transpose(-2, -1))            # dp = dO vᵀ
            grad_scores = probs.mul_(grad_probs.sub_(row_dot[:, :, q_start:q_stop]))  # ds = p ∘ (dp − D)
            dq_block += torch.matmul(grad_scores, k_block)
            grad_k[:, :, k_start:k_stop] += torch.matmul(grad_scores.transpose(-2, -1), q_block)
            del scores, probs, grad_probs, grad_scores
        grad_q[:, :, q_start:q_stop] = dq_block * scale
    return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)


class _FlashTiledFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, block: int, query_block: int):
        out, logsumexp = flash_forward(q, k, v, causal, block, query_block)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        ctx.causal, ctx.block, ctx.query_block = causal, block, query_block
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, logsumexp = ctx.saved_tensors
        grad_q, grad_k, grad_v = flash_backward(grad_out, q, k, v, out, logsumexp, ctx.causal, ctx.block,
                                                ctx.query_block)
        return grad_q, grad_k, grad_v, None, None, None


def flash_tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                          block: int = 256, query_block: int = 1024) -> torch.Tensor:
    """Softmax attention by online softmax over blocks; differentiable (FlashAttention-2 backward)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _FlashTiledFunction.apply(q, k, v, causal, block, query_block)
    return flash_forward(q, k, v, causal, block, query_block)[0]


class FlashTiled(Variant):
    name = "flash-tiled"
    family = "flash"
    computes = "softmax_attention"
    description = "online-softmax attention in plain PyTorch over key/query blocks, FlashAttention-2 backward"
    knobs = {
        "block": Knob(int, default=256, minimum=1, doc="keys per block (columns of one block's scores)"),
        "query_block": Knob(int, default=1024, minimum=1, doc="queries per block (rows of one block's scores)"),
    }

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        block, query_block = self.knob_values(case, "block", "query_block")
        return lambda: flash_tiled_attention(q, k, v, case.causal, block, query_block)

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows)

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        query_index = torch.arange(case.seq_len) if rows is None else torch.as_tensor(rows)
        scores = q[:, :, query_index] @ k.transpose(-2, -1) / math.sqrt(case.head_dim)   # (B, H, R, M)
        if case.causal:
            allowed = causal_mask(case.seq_len, case.kv_len, rows=query_index)              # (R, M)
            scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)

    def flops(self, case: Case) -> int:
        return attention_flops(case)

    def performed_flops(self, case: Case) -> int:
        """Each query block against every key up to its last visible one: whole blocks across the diagonal."""
        _, query_block = self.knob_values(case, "block", "query_block")
        offset = case.kv_len - case.seq_len
        pairs = sum((min(case.seq_len, start + query_block) - start)
                    * _visible_key_stop(min(case.seq_len, start + query_block), offset, case.kv_len, case.causal)
                    for start in range(0, case.seq_len, query_block))
        return attention_flops(case, pairs=pairs)

    def memory_model(self, case: Case) -> int:
        """Output (work dtype, then its cast), log-sum-exp, and one query block's working set."""
        bh, d = case.batch * case.heads, case.head_dim
        block, query_block = self.knob_values(case, "block", "query_block")
        block, query_block = min(block, case.kv_len), min(query_block, case.seq_len)
        work = 8 if case.dtype == "float64" else 4
        output = bh * case.seq_len * d * (work + (case.element_bytes if work != case.element_bytes else 0))
        logsumexp = bh * case.seq_len * work
        scores = bh * query_block * block * work                                       # s, then p in place
        rows = bh * query_block * (4 * d + 4) * work                                   # q block, acc, p·v, acc/l; m, l
        keys = 2 * bh * block * d * work if work != case.element_bytes else 0         # upcast k, v blocks
        return output + logsumexp + scores + rows + keys

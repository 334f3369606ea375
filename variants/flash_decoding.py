"""Flash-Decoding: split the KV cache, softmax each split, combine by log-sum-exp.

A decode step is a few queries against a long KV cache: FlashAttention's
parallelism over (batch, heads, query blocks) leaves most of the machine idle
there (one KV head under MQA is one core's work). Flash-Decoding (Dao, Haziza,
Massa, Sizov 2023) cuts the M keys into S splits of m keys and treats each
split as independent work, then combines the partial results exactly:

    per split s (all S at once, one batched matmul each):
        scores_s = q k_sᵀ / √d                              (R, m)
        mx_s     = rowmax(scores_s)                         (R, 1)
        p_s      = exp(scores_s − mx_s),  l_s = rowsum(p_s)
        o_s      = p_s v_s / l_s                            (R, d_v)   the split's own softmax output
        lse_s    = mx_s + log l_s                           (R, 1)     its log-sum-exp
    combine:  LSE = logsumexp_s(lse_s),  out = Σ_s exp(lse_s − LSE) · o_s

which is exactly softmax over all M keys. Grouped heads (GQA, MQA) share
their keys: q (B, H, N, d) is viewed as (B, Hkv, G·N, d), the G query heads of
a KV head stacked as R = G·N rows, so every key is read once per KV head, not
once per query head. k is (B, Hkv, M, d) and v (B, Hkv, M, d_v).

When m does not divide M, the M − S·m leftover keys form one more split at
the front. A causal mask is aligned at the end (query i sees keys
j <= i + M − N): with m >= N only the last split holds hidden keys, so only
it is masked (a (R, m) boolean built in `prepare`), and no row of any split
is wholly hidden.

`splits` sets S; its default 0 takes `SPLITS_PER_THREAD` per thread
(`torch.get_num_threads()`): the batched matmuls then run B·Hkv·S independent
pieces on every core, and a split's keys (256 at 8K keys on 2 threads) stay
in cache while its scores are formed (measured here with
benchmarks/bench_decode_bandwidth.py: 32 splits reached 0.53-0.57 of the copy
bandwidth at 8K and 32K keys, GQA and MQA; 2 splits 0.20-0.41, sdpa-flash
0.12-0.22).

Paged (``page_size`` > 0): the splits are runs of whole pages. With the
cache's P pages in S splits of P/S pages (S the largest divisor of P at most
the requested count, and each split at least seq_len + page_size keys, so the
last one holds every hidden key: the causal ones and the empty slots of the
last page), each step gathers the pages through the block table into a
(B, Hkv, P·page_size, d) buffer (`kv_reader`), viewed as the splits
(B, Hkv, S, m, d) with m = (P/S)·page_size; the rest is the same softmax
per split and one combine.

Memory beyond the inputs: the (B, Hkv, S, R, m) scores,
that is R·M per KV head (a decode step's R = G·N is small), and the S partial
outputs.
"""

from __future__ import annotations

import math

import torch

from attnbench import AttentionInputs, Case, ExactSoftmaxKernel, Knob, causal_mask, kv_reader

SPLITS_PER_THREAD = 16


def split_count(requested: int, kv_len: int, seq_len: int, causal: bool) -> int:
    """S, clamped so that every split has at least one key (causal: at least seq_len keys)."""
    splits = requested or SPLITS_PER_THREAD * torch.get_num_threads()
    smallest = max(seq_len, 1) if causal else 1
    return max(1, min(splits, kv_len // smallest))


def hidden_in_last_split(seq_len: int, kv_len: int, split_len: int, groups: int, device=None) -> torch.Tensor:
    """(G·N, m) bool, True where the end-aligned causal mask hides a key of the last split."""
    rows = causal_mask(seq_len, kv_len, device=device)[:, kv_len - split_len:]   # (N, m) visible
    return (~rows).repeat(groups, 1)                                             # row g·N + i is query i


def paged_split_count(requested: int, pages: int, page_size: int, seq_len: int) -> int:
    """S for a paged cache of `pages` pages: the largest divisor of P up to S whose splits hold seq_len + page_size keys."""
    target = requested or SPLITS_PER_THREAD * torch.get_num_threads()
    longest_hidden = seq_len + page_size                     # causal keys hidden from query 0, and the empty slots
    fits = [s for s in range(1, min(target, pages) + 1) if pages % s == 0 and (pages // s) * page_size >= longest_hidden]
    return max(fits, default=1)


def hidden_in_last_paged_split(seq_len: int, kv_len: int, split_len: int, groups: int, causal: bool,
                               device=None) -> torch.Tensor | None:
    """(G·N, m) bool for the last split of a paged cache: True at the empty slots past kv_len and, if causal,
    at the end-aligned keys a query cannot see; None when nothing is hidden."""
    start = kv_len - split_len + (-kv_len) % split_len       # the last split's first logical position
    keys = torch.arange(start, start + split_len, device=device)                 # (m,)
    positions = torch.arange(seq_len, device=device) + (kv_len - seq_len)        # (N,) end-aligned
    hidden = keys[None, :] >= kv_len if not causal else keys[None, :] > positions[:, None]
    hidden = hidden.expand(seq_len, split_len)
    return hidden.repeat(groups, 1) if bool(hidden.any()) else None              # row g·N + i is query i


def _partial(q, k, v, hidden=None):
    """One batch of splits: each split's softmax output o (…, R, d_v) and log-sum-exp (…, R, 1).

    q (…, R, d) already scaled by 1/√d; k (…, m, d); v (…, m, d_v); hidden masks the last split.
    """
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    scores = q @ k.transpose(-2, -1)                                      # (…, R, m)
    if hidden is not None and grad:
        scores = torch.cat([scores[..., :-1, :, :], scores[..., -1:, :, :].masked_fill(hidden, float("-inf"))], dim=-3)
    elif hidden is not None:
        scores[..., -1, :, :].masked_fill_(hidden, float("-inf"))
    row_max = scores.detach().amax(dim=-1, keepdim=True)                  # (…, R, 1)
    probs = (scores - row_max).exp() if grad else scores.sub_(row_max).exp_()
    row_sum = probs.sum(dim=-1, keepdim=True)                             # (…, R, 1)
    out = probs @ v                                                       # (…, R, d_v)
    out = out / row_sum if grad else out.div_(row_sum)
    return out, row_max + row_sum.log()


def split_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int,
                       hidden: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ/√d [+ mask]) v by `splits` KV splits and one log-sum-exp combine: (B, H, N, d_v).

    `hidden` is `hidden_in_last_split(...)` for a causal case, else None.
    """
    batch, heads, seq_len, head_dim = q.shape
    kv_heads, kv_len, v_dim = k.shape[1], k.shape[2], v.shape[-1]
    groups = heads // kv_heads
    split_len = kv_len // splits                                          # m
    front = kv_len - splits * split_len                                   # leftover keys, a split of their own
    rows = q.reshape(batch, kv_heads, groups * seq_len, head_dim) * (1.0 / math.sqrt(head_dim))   # (B, Hkv, R, d)

    k_splits = k[:, :, front:].view(batch, kv_heads, splits, split_len, head_dim)   # (B, Hkv, S, m, d), a view
    v_splits = v[:, :, front:].view(batch, kv_heads, splits, split_len, v_dim)
    outs, lses = _partial(rows[:, :, None], k_splits, v_splits, hidden)   # (B, Hkv, S, R, d_v), (B, Hkv, S, R, 1)
    if front:
        front_out, front_lse = _partial(rows, k[:, :, :front], v[:, :, :front])       # (B, Hkv, R, ·)
        outs = torch.cat([front_out[:, :, None], outs], dim=2)
        lses = torch.cat([front_lse[:, :, None], lses], dim=2)
    weights = torch.softmax(lses, dim=2)                                  # exp(lse_s − LSE), (B, Hkv, S, R, 1)
    out = (weights * outs).sum(dim=2)                                     # (B, Hkv, R, d_v)
    return out.view(batch, heads, seq_len, v_dim)


class FlashDecoding(ExactSoftmaxKernel):
    name = "flash-decoding"
    family = "flash"
    description = "Flash-Decoding: the KV cache in splits, a softmax per split, one log-sum-exp combine"
    supports_gqa = True
    supports_v_head_dim = True
    supports_paged_kv = True
    knobs = {
        "splits": Knob(int, default=0, minimum=0,
                       doc=f"KV splits S; 0 = {SPLITS_PER_THREAD} per thread (torch.get_num_threads())"),
    }

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()                    # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        if case.page_size:
            return self._prepare_paged(case, q, k, v)
        splits = split_count(self.knob_values(case, "splits")[0], case.kv_len, case.seq_len, case.causal)
        hidden = None
        if case.causal:
            hidden = hidden_in_last_split(case.seq_len, case.kv_len, case.kv_len // splits,
                                          case.heads // case.kv_heads, q.device)

        def forward() -> torch.Tensor:
            return split_kv_attention(q, k, v, splits, hidden)

        return forward

    def _prepare_paged(self, case: Case, q, k, v):
        read_pages = kv_reader(case, k, v, padded=True)      # each call: (B, Hkv, P·page_size, ·), pages gathered
        pages = -(-case.kv_len // case.page_size)
        splits = paged_split_count(self.knob_values(case, "splits")[0], pages, case.page_size, case.seq_len)
        hidden = hidden_in_last_paged_split(case.seq_len, case.kv_len, pages // splits * case.page_size,
                                            case.heads // case.kv_heads, case.causal, q.device)

        def forward() -> torch.Tensor:
            return split_kv_attention(q, *read_pages(), splits, hidden)   # S divides P: no leftover split

        return forward

    def memory_model(self, case: Case) -> int:
        """The scores R·M per KV head (float, as the inputs), the S partial outputs and the output."""
        splits = split_count(self.knob_values(case, "splits")[0], case.kv_len, case.seq_len, case.causal)
        rows = case.batch * case.heads * case.seq_len                     # B·Hkv·R
        scores = rows * case.kv_len * case.element_bytes
        partials = (splits + 2) * rows * (case.v_head_dim + 2) * case.element_bytes
        return scores + partials + super().memory_model(case)

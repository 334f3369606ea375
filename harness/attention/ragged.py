"""Ragged batches in tensors: packing, the padded mask, the packed document mask, per-sequence calls and the reference.

A ragged case's inputs are the usual (B, H, N, d) buffers; sequence b's
tokens are its first q_b query rows and m_b key rows (`RaggedBatch`,
`attnbench.kinds.lengths.batch`). A variant reaches them in one of two
layouts, built in `prepare`:

- ``padded``: the buffers cut to (B, H, N_max, d) and (B, Hkv, M_max, d), with
  a (B, 1, N_max, M_max) mask (`padded_allowed`) that hides the padding keys
  (and, causal, the keys after each query, aligned at the end of its own keys);
- ``packed``: the sequences' tokens end to end, (1, H, Σq, d) and (1, Hkv, Σm, d)
  (`pack`), sequence s at rows [cu_q[s], cu_q[s + 1]); a kernel either takes
  the offsets in one call (Flex's document mask, `document_mask_mod`) or is
  called once per sequence on views of the packed buffer (`per_sequence`).

Whatever the layout, a ragged variant's output is compared by its real rows
only (`real_rows`: (1, H, Σq, d_v)) against the float64 reference computed
sequence by sequence (`ragged_reference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from attnbench.kinds.lengths.batch import RaggedBatch, ragged_batch


def pack(x: torch.Tensor, lengths: tuple[int, ...]) -> torch.Tensor:
    """(B, H, N, c) -> (1, H, Σ lengths, c): the first lengths[b] rows of each sequence, end to end (a copy)."""
    return torch.cat([x[b:b + 1, :, :n] for b, n in enumerate(lengths)], dim=-2)


def padded_allowed(batch: RaggedBatch, device=None) -> torch.Tensor:
    """(B, 1, N_max, M_max) bool: query i of sequence b sees key j when i < q_b, j < m_b and, causal, j <= i + m_b − q_b.

    A padding row (i >= q_b) sees key 0 only, so every row's softmax stays
    finite; its output is padding and is never read.
    """
    queries = torch.tensor(batch.queries, device=device).view(-1, 1, 1)              # (B, 1, 1)
    keys = torch.tensor(batch.keys, device=device).view(-1, 1, 1)                    # (B, 1, 1)
    i = torch.arange(batch.max_queries, device=device).view(1, -1, 1)                # (1, N, 1)
    j = torch.arange(batch.max_keys, device=device).view(1, 1, -1)                   # (1, 1, M)
    allowed = (i < queries) & (j < keys)                                              # (B, N, M)
    if batch.causal:
        allowed &= j <= i + keys - queries
    allowed |= (i >= queries) & (j == 0)                                              # padding rows: key 0 only
    return allowed[:, None]                                                           # (B, 1, N, M)


def token_index(lengths: tuple[int, ...], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence of each packed token, its position inside the sequence), both (Σ lengths,) int64."""
    sizes = torch.tensor(lengths, device=device)
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=device), sizes)      # (T,)
    starts = torch.cumsum(sizes, 0) - sizes                                                   # (B,)
    position = torch.arange(int(sizes.sum()), device=device) - starts[sequence]               # (T,)
    return sequence, position


def document_mask_mod(batch: RaggedBatch, device=None):
    """A Flex ``mask_mod`` over packed tokens: a query sees the keys of its own sequence (causal: up to itself,
    its position aligned at the end of its sequence's keys)."""
    q_seq, q_pos = token_index(batch.queries, device)
    kv_seq, kv_pos = token_index(batch.keys, device)
    shift = (torch.tensor(batch.keys, device=device) - torch.tensor(batch.queries, device=device))[q_seq]  # (Tq,)
    q_at = q_pos + shift                                                  # each query's position on its key axis
    causal = batch.causal

    def document(b, h, q_idx, kv_idx):
        same = q_seq[q_idx] == kv_seq[kv_idx]
        return same & (kv_pos[kv_idx] <= q_at[q_idx]) if causal else same

    return document


def sequence_case(case, queries: int, keys: int):
    """`case` for one of its sequences: batch 1, seq_len `queries`, kv_len `keys`, lengths fixed, layout padded."""
    return dataclasses.replace(case, batch=1, seq_len=queries, kv_len=keys, lengths="fixed", layout="padded",
                               kv_cache_bytes=None)


def packed_inputs(case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """(RaggedBatch, packed q (1, H, Σq, d), packed k (1, Hkv, Σm, d), packed v (1, Hkv, Σm, d_v))."""
    batch = ragged_batch(case)
    return batch, pack(q, batch.queries), pack(k, batch.keys), pack(v, batch.keys)


def per_sequence(case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 prepare_one: Callable) -> Callable[[], torch.Tensor]:
    """A forward that calls a variant once per sequence on views of the packed buffers: (1, H, Σq, d_v).

    `prepare_one(sequence_case, q_s, k_s, v_s)` is the variant's own prepare on
    one sequence (B = 1); the packing and every per-sequence setup happen here,
    outside the timed forward, which only calls and concatenates.
    """
    batch, q, k, v = packed_inputs(case, q, k, v)
    cu_q, cu_k = batch.cu_seqlens_q, batch.cu_seqlens_k
    calls = [prepare_one(sequence_case(case, nq, nk), q[:, :, cu_q[s]:cu_q[s + 1]], k[:, :, cu_k[s]:cu_k[s + 1]],
                         v[:, :, cu_k[s]:cu_k[s + 1]])
             for s, (nq, nk) in enumerate(zip(batch.queries, batch.keys, strict=True))]

    def forward() -> torch.Tensor:
        return torch.cat([call() for call in calls], dim=-2)                            # (1, H, Σq, d_v)

    return forward


def real_rows(out: torch.Tensor, case) -> torch.Tensor:
    """A ragged variant's output reduced to its real rows, (1, H, Σq, d_v): packed as it is, padded packed."""
    batch = ragged_batch(case)
    if case.layout == "packed":
        if out.shape[0] != 1 or out.shape[-2] != batch.total_queries:
            raise ValueError(f"{case.variant}: a packed output must be (1, H, {batch.total_queries}, d_v), "
                             f"got {tuple(out.shape)}")
        return out
    return pack(out, batch.queries)


def ragged_reference(case, variant, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(1, H, Σq, d_v) float64: the variant's own reference on each sequence alone, end to end."""
    from attnbench.core.variant import AttentionInputs

    batch = ragged_batch(case)
    outs = [variant.reference(sequence_case(case, nq, nk),
                              AttentionInputs(q[b:b + 1, :, :nq], k[b:b + 1, :, :nk], v[b:b + 1, :, :nk]))
            for b, (nq, nk) in enumerate(zip(batch.queries, batch.keys, strict=True))]
    return torch.cat(outs, dim=-2)

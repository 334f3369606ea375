"""Attention masks, defined once and used by every variant and reference.

A mask is one predicate of a query index and a key index, written the way
FlexAttention and attention-gym write a ``mask_mod``: ``mask_mod(b, h, q_idx,
kv_idx)`` is True where the query may see the key. The same predicate gives

- the boolean (R, M) matrix a reference or SDPA uses: `mask_matrix`, and its
  named forms `causal_mask` and `band_mask`;
- Flex's block mask: pass the mask_mod to ``create_block_mask``;
- the number of visible pairs, in closed form: `visible_pairs`.

When ``kv_len != seq_len`` queries are aligned at the end of the keys (as
SDPA's lower-right causal mask, flash-attn and a decode step against a KV
cache do): query i sits at key position ``i + kv_len - seq_len``.

A case's whole mask, its `causal` flag combined with its `mask` axis, is
`case_mask_mod(case)` (None when every key is visible), with its matrix
`case_mask_matrix` and its exact pair count `case_visible_pairs`:

- ``sliding_window:W``: ``|q' - kv| <= W``, and ``kv <= q'`` if causal: W + 1 keys
  (flash-attn's ``window_size=(W, W)`` and attention-gym's ``sliding_window``; a
  model config's window of K keys, the query's own included, as Hugging Face's
  Mistral counts it, is ``sliding_window:K-1``: see `attnbench.core.presets`);
- ``document:K``: K documents of seeded random lengths summing to seq_len
  (`document_ids`); a query sees the keys of its own document (and only
  those before it if causal);
- ``prefix_lm:P``: every query sees the first P keys, and the keys up to
  itself (bidirectional over the prefix, causal after it, with or without `causal`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnbench.core.maskspec import parse_mask

MaskMod = Callable[..., torch.Tensor]


def causal_offset(seq_len: int, kv_len: int) -> int:
    """Key position of query 0 under end alignment: ``kv_len - seq_len``."""
    return kv_len - seq_len


def query_positions(seq_len: int, kv_len: int, rows: torch.Tensor | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Each query's position on the key axis, (R,): ``i + kv_len - seq_len`` for the rows asked for."""
    index = torch.arange(seq_len, device=device) if rows is None else torch.as_tensor(rows, device=device)
    return index + causal_offset(seq_len, kv_len)


def causal_mask_mod(seq_len: int, kv_len: int) -> MaskMod:
    """The causal predicate: key ``kv_idx`` is visible to query ``q_idx`` when ``kv_idx <= q_idx + kv_len - seq_len``."""
    offset = causal_offset(seq_len, kv_len)

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset

    return causal


def band_mask_mod(seq_len: int, kv_len: int, window, *, causal: bool = False) -> MaskMod:
    """The sliding-window predicate: ``|q' - kv_idx| <= window`` (q' the end-aligned position), and ``kv_idx <= q'`` if causal.

    `window` may be a 0-d tensor, so compiled code takes it as an input instead of a constant.
    """
    offset = causal_offset(seq_len, kv_len)

    def sliding_window(b, h, q_idx, kv_idx):
        query = q_idx + offset
        allowed = (query - kv_idx).abs() <= window
        return allowed & (kv_idx <= query) if causal else allowed

    return sliding_window


def mask_matrix(mask_mod: MaskMod, seq_len: int, kv_len: int, *, rows: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(R, M) bool: `mask_mod` at every (query row, key) pair, for all N query rows or just `rows`."""
    query = torch.arange(seq_len, device=device) if rows is None else torch.as_tensor(rows, device=device)
    key = torch.arange(kv_len, device=device)
    return mask_mod(None, None, query[:, None], key[None, :])                  # (R, M)


def causal_mask(seq_len: int, kv_len: int, *, rows: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(R, M) bool: key j is visible to query i when ``j <= i + kv_len - seq_len``."""
    return mask_matrix(causal_mask_mod(seq_len, kv_len), seq_len, kv_len, rows=rows, device=device)


def band_mask(seq_len: int, kv_len: int, window: int, *, causal: bool = False,
              rows: torch.Tensor | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(R, M) bool: key j is visible when ``|i' - j| <= window`` (i' the end-aligned position), and ``j <= i'`` if causal."""
    return mask_matrix(band_mask_mod(seq_len, kv_len, window, causal=causal), seq_len, kv_len,
                       rows=rows, device=device)


def visible_pairs(seq_len: int, kv_len: int, *, causal: bool = False, window: int | None = None) -> int:
    """How many (query, key) pairs the mask lets through, in closed form (no (N, M) matrix).

    Query i, at key position q' = i + kv_len - seq_len, sees the keys
    [q' - window, stop) clipped to [0, kv_len), with stop = q' + 1 if causal,
    q' + window + 1 for a window alone, and every key without either.
    """
    offset = causal_offset(seq_len, kv_len)
    if causal:
        stops = _clipped_sum(offset + 1, seq_len, kv_len)
    elif window is not None:
        stops = _clipped_sum(offset + window + 1, seq_len, kv_len)
    else:
        stops = seq_len * kv_len
    starts = _clipped_sum(offset - window, seq_len, kv_len) if window is not None else 0
    return stops - starts


def _clipped_sum(first: int, count: int, limit: int) -> int:
    """Σ clamp(t, 0, limit) over t = first, first + 1, ..., first + count - 1."""
    return _ramp_sum(first + count, limit) - _ramp_sum(first, limit)


def _ramp_sum(stop: int, limit: int) -> int:
    """Σ clamp(t, 0, limit) over 0 <= t < stop (0 when stop <= 0)."""
    if stop <= limit + 1:
        return max(0, stop) * (max(0, stop) - 1) // 2
    return limit * (limit + 1) // 2 + (stop - limit - 1) * limit


def document_ids(seq_len: int, documents: int, seed: int = 0) -> torch.Tensor:
    """(N,) int64: the document of each position, K documents of seeded random lengths (each >= 1)."""
    generator = torch.Generator().manual_seed(seed + 7919 * documents)
    cuts = torch.randperm(seq_len - 1, generator=generator)[:documents - 1] + 1      # K - 1 distinct boundaries
    starts = torch.zeros(seq_len, dtype=torch.int64)
    starts[cuts] = 1
    return starts.cumsum(0)


def case_window(case) -> int | None:
    """W of a case whose mask is ``sliding_window:W``, else None (for kernels that take the window as a number)."""
    spec = parse_mask(getattr(case, "mask", "none"))
    return spec.size if spec.kind == "sliding_window" else None


def case_mask_mod(case, device: torch.device | str | None = None) -> MaskMod | None:
    """The predicate of `case`'s causal flag and mask axis together, or None when every key is visible."""
    spec = parse_mask(getattr(case, "mask", "none"))
    n, m = case.seq_len, case.kv_len
    if spec.kind == "none":
        return causal_mask_mod(n, m) if case.causal else None
    if spec.kind == "sliding_window":
        return band_mask_mod(n, m, spec.size, causal=case.causal)
    if spec.kind == "prefix_lm":
        causal = causal_mask_mod(n, m)
        prefix = spec.size

        def prefix_lm(b, h, q_idx, kv_idx):
            return (kv_idx < prefix) | causal(b, h, q_idx, kv_idx)

        return prefix_lm
    documents = document_ids(n, spec.size, case.seed).to(device)
    causal = case.causal

    def document(b, h, q_idx, kv_idx):
        same = documents[q_idx] == documents[kv_idx]
        return same & (kv_idx <= q_idx) if causal else same

    return document


def case_mask_matrix(case, *, rows: torch.Tensor | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor | None:
    """(R, M) bool of `case_mask_mod`, or None when every key is visible."""
    mod = case_mask_mod(case, device=device)
    return None if mod is None else mask_matrix(mod, case.seq_len, case.kv_len, rows=rows, device=device)


def case_visible_pairs(case) -> int:
    """The exact number of (query, key) pairs `case`'s mask lets through (closed forms, no (N, M) matrix)."""
    spec = parse_mask(getattr(case, "mask", "none"))
    n, m = case.seq_len, case.kv_len
    if spec.kind == "none":
        return visible_pairs(n, m, causal=case.causal)
    if spec.kind == "sliding_window":
        return visible_pairs(n, m, causal=case.causal, window=spec.size)
    if spec.kind == "document":
        lengths = torch.bincount(document_ids(n, spec.size, case.seed)).tolist()
        return sum(length * (length + 1) // 2 if case.causal else length * length for length in lengths)
    ends = torch.clamp(query_positions(n, m) + 1, 0, m)                    # keys 0..q' under causal
    return int(torch.maximum(ends, torch.full_like(ends, min(spec.size, m))).sum())

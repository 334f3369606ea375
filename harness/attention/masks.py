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
`case_mask_matrix` and its exact pair count `case_visible_pairs`. Each mask
kind is one file of `attnbench.kinds.masks`, which gives its predicate and
its pair count; the causal and band predicates are in
`attnbench.kinds.masks.predicates`.
"""

from __future__ import annotations

import torch

from attnbench.kinds.masks import mask_of
from attnbench.kinds.masks.document import document_ids
from attnbench.kinds.masks.predicates import (
    MaskMod,
    band_mask_mod,
    causal_mask_mod,
    causal_offset,
    visible_pairs,
)

__all__ = ["MaskMod", "band_mask", "band_mask_mod", "case_mask_matrix", "case_mask_mod", "case_visible_pairs",
           "case_window", "causal_mask", "causal_mask_mod", "causal_offset", "document_ids", "mask_matrix",
           "query_positions", "visible_pairs"]


def query_positions(seq_len: int, kv_len: int, rows: torch.Tensor | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Each query's position on the key axis, (R,): ``i + kv_len - seq_len`` for the rows asked for."""
    index = torch.arange(seq_len, device=device) if rows is None else torch.as_tensor(rows, device=device)
    return index + causal_offset(seq_len, kv_len)


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


def case_window(case) -> int | None:
    """W of a case whose mask is ``sliding_window:W``, else None (for kernels that take the window as a number)."""
    mask = mask_of(case)
    return mask.kind.window(mask.arg)


def case_mask_mod(case, device: torch.device | str | None = None) -> MaskMod | None:
    """The predicate of `case`'s causal flag and mask axis together, or None when every key is visible."""
    mask = mask_of(case)
    return mask.kind.mask_mod(case, mask.arg, device=device)


def case_mask_matrix(case, *, rows: torch.Tensor | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor | None:
    """(R, M) bool of `case_mask_mod`, or None when every key is visible."""
    mod = case_mask_mod(case, device=device)
    return None if mod is None else mask_matrix(mod, case.seq_len, case.kv_len, rows=rows, device=device)


def case_visible_pairs(case) -> int:
    """The exact number of (query, key) pairs `case`'s mask lets through (closed forms, no (N, M) matrix)."""
    mask = mask_of(case)
    return mask.kind.visible_pairs(case, mask.arg)

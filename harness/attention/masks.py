"""Attention masks, defined once and used by every variant and reference.

A mask is a boolean (R, M) matrix, True where query row r may see key j.
When ``kv_len != seq_len`` queries are aligned at the end of the keys (as
SDPA's lower-right causal mask, flash-attn and a decode step against a KV
cache do): query i sits at key position ``i + kv_len - seq_len``.
"""

from __future__ import annotations

import torch


def causal_offset(seq_len: int, kv_len: int) -> int:
    """Key position of query 0 under end alignment: ``kv_len - seq_len``."""
    return kv_len - seq_len


def query_positions(seq_len: int, kv_len: int, rows: torch.Tensor | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Each query's position on the key axis, (R,): ``i + kv_len - seq_len`` for the rows asked for."""
    index = torch.arange(seq_len, device=device) if rows is None else torch.as_tensor(rows, device=device)
    return index + causal_offset(seq_len, kv_len)


def causal_mask(seq_len: int, kv_len: int, *, rows: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(R, M) bool: key j is visible to query i when ``j <= i + kv_len - seq_len``."""
    query = query_positions(seq_len, kv_len, rows, device)                  # (R,)
    key = torch.arange(kv_len, device=device)                               # (M,)
    return key[None, :] <= query[:, None]                                   # (R, M)


def band_mask(seq_len: int, kv_len: int, window: int, *, causal: bool = False,
              rows: torch.Tensor | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(R, M) bool: key j is visible when ``|i' - j| <= window`` (i' the end-aligned position), and ``j <= i'`` if causal."""
    query = query_positions(seq_len, kv_len, rows, device)[:, None]          # (R, 1)
    key = torch.arange(kv_len, device=device)[None, :]                      # (1, M)
    allowed = (query - key).abs() <= window                                 # (R, M)
    return allowed & (key <= query) if causal else allowed

"""The causal and sliding-window predicates and their visible-pair counts in closed form.

Pure Python: a predicate is written with tensor operators only, the way
FlexAttention's ``mask_mod`` is, so building one needs no torch import.
When ``kv_len != seq_len`` queries are aligned at the end of the keys: query i
sits at key position ``i + kv_len - seq_len``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MaskMod = Callable[..., Any]


def causal_offset(seq_len: int, kv_len: int) -> int:
    """Key position of query 0 under end alignment: ``kv_len - seq_len``."""
    return kv_len - seq_len


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


def visible_pairs(seq_len: int, kv_len: int, *, causal: bool = False, window: int | None = None) -> int:
    """How many (query, key) pairs the mask lets through, in closed form (no (N, M) matrix).

    Query i, at key position q' = i + kv_len - seq_len, sees the keys
    [q' - window, stop) clipped to [0, kv_len), with stop = q' + 1 if causal,
    q' + window + 1 for a window alone, and every key without either.
    """
    offset = causal_offset(seq_len, kv_len)
    if causal:
        stops = clipped_sum(offset + 1, seq_len, kv_len)
    elif window is not None:
        stops = clipped_sum(offset + window + 1, seq_len, kv_len)
    else:
        stops = seq_len * kv_len
    starts = clipped_sum(offset - window, seq_len, kv_len) if window is not None else 0
    return stops - starts


def clipped_sum(first: int, count: int, limit: int) -> int:
    """Σ clamp(t, 0, limit) over t = first, first + 1, ..., first + count - 1."""
    return _ramp_sum(first + count, limit) - _ramp_sum(first, limit)


def _ramp_sum(stop: int, limit: int) -> int:
    """Σ clamp(t, 0, limit) over 0 <= t < stop (0 when stop <= 0)."""
    if stop <= limit + 1:
        return max(0, stop) * (max(0, stop) - 1) // 2
    return limit * (limit + 1) // 2 + (stop - limit - 1) * limit

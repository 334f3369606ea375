"""``sliding_window:W``: ``|q' - kv| <= W``, and ``kv <= q'`` if causal: W + 1 keys.

flash-attn's ``window_size=(W, W)`` and attention-gym's ``sliding_window``; a
model config's window of K keys, the query's own included, as Hugging Face's
Mistral counts it, is ``sliding_window:K-1`` (see `attnbench.core.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.kinds.masks.base import SizedMask
from attnbench.kinds.masks.predicates import band_mask_mod, visible_pairs


@dataclass(frozen=True)
class SlidingWindow(SizedMask):
    def mask_mod(self, case, window: int, device=None):
        return band_mask_mod(case.seq_len, case.kv_len, window, causal=case.causal)

    def visible_pairs(self, case, window: int) -> int:
        return visible_pairs(case.seq_len, case.kv_len, causal=case.causal, window=window)

    def window(self, window: int) -> int:
        return window


SLIDING_WINDOW = SlidingWindow(
    "sliding_window", "sliding_window:W (each query sees the keys within W positions; with causal, the W before it)",
    short="sw", example=256)

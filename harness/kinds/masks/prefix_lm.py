"""``prefix_lm:P``: every query sees the first P keys, and the keys up to itself.

Bidirectional over the prefix, causal after it, with or without `causal`.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.kinds.masks.base import SizedMask
from attnbench.kinds.masks.predicates import causal_mask_mod, causal_offset, clipped_sum


@dataclass(frozen=True)
class PrefixLM(SizedMask):
    def mask_mod(self, case, prefix: int, device=None):
        causal = causal_mask_mod(case.seq_len, case.kv_len)

        def prefix_lm(b, h, q_idx, kv_idx):
            return (kv_idx < prefix) | causal(b, h, q_idx, kv_idx)

        return prefix_lm

    def visible_pairs(self, case, prefix: int) -> int:
        """Σ over queries of max(keys up to q', min(P, M)) = Σ clamp(q' + 1, c, M) with c = min(P, M)."""
        n, m = case.seq_len, case.kv_len
        floor = min(prefix, m)
        return floor * n + clipped_sum(causal_offset(n, m) + 1 - floor, n, m - floor)


PREFIX_LM = PrefixLM("prefix_lm", "prefix_lm:P (every query sees the first P keys, and the keys up to itself)",
                     short="prefix", example=128)

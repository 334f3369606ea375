"""``none``: no mask beyond the case's causal flag."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.masks.base import MaskKind
from attnbench.kinds.masks.predicates import causal_mask_mod, visible_pairs


@dataclass(frozen=True)
class NoMask(MaskKind):
    def read(self, split: KindText) -> None:
        split.bare(noun="size")

    def mask_mod(self, case, arg, device=None):
        return causal_mask_mod(case.seq_len, case.kv_len) if case.causal else None

    def visible_pairs(self, case, arg) -> int:
        return visible_pairs(case.seq_len, case.kv_len, causal=case.causal)


NONE = NoMask("none", "none")

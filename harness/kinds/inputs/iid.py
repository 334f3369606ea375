"""``iid`` (the default): q, k ~ N(0, qk_std²) and v ~ N(0, 1), independent entries."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.inputs.base import InputKind


@dataclass(frozen=True)
class Iid(InputKind):
    def read(self, split: KindText) -> None:
        split.bare("; its scale is qk_std", noun="parameter")


IID = Iid("iid", "iid (independent Gaussians)")

"""``outliers[:RATE]``: FlashAttention-3's N(0, 1) + N(0, 100)·Bernoulli(RATE) for every entry (default 0.001)."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.inputs.base import Parametrised


@dataclass(frozen=True)
class Outliers(Parametrised):
    def read(self, split: KindText) -> float | None:
        rate = super().read(split)
        if rate is not None and not 0 < rate < 1:
            raise split.error("the outlier rate must be between 0 and 1, e.g. outliers:0.001")
        return rate


OUTLIERS = Outliers("outliers", "outliers[:RATE] (FlashAttention-3's N(0,1) + N(0,100)·Bernoulli(RATE), default 0.001)",
                    default=0.001)

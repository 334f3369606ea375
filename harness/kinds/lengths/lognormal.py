"""``lognormal:MEDIAN,SIGMA``: lengths MEDIAN·exp(SIGMA·z), z ~ N(0, 1), rounded: the long tail of chat traces."""

from __future__ import annotations

import math
from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind, numbers, whole


@dataclass(frozen=True)
class LogNormal(LengthsKind):
    def read(self, split: KindText) -> tuple[int, float]:
        median, sigma = numbers(split, ("MEDIAN", "SIGMA"), "lognormal:256,0.8")
        if not sigma >= 0:
            raise split.error(f"SIGMA must be at least 0, got {sigma}")
        return (whole(median, "MEDIAN", split), sigma)

    def draw(self, arg, count, rng) -> list[int]:
        median, sigma = arg
        return [round(median * math.exp(sigma * rng.gauss(0.0, 1.0))) for _ in range(count)]


LOGNORMAL = LogNormal("lognormal", "lognormal:MEDIAN,SIGMA (MEDIAN·exp(SIGMA·z), z standard normal)", whole_arg=True)

"""``outlier:BASE,LONG``: every sequence BASE tokens but one, at a seeded place in the batch, LONG."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind, numbers, whole


@dataclass(frozen=True)
class Outlier(LengthsKind):
    def read(self, split: KindText) -> tuple[int, int]:
        base, long = numbers(split, ("BASE", "LONG"), "outlier:128,2048")
        return (whole(base, "BASE", split), whole(long, "LONG", split))

    def draw(self, arg, count, rng) -> list[int]:
        base, long = arg
        lengths = [base] * count
        lengths[rng.randrange(count)] = long
        return lengths


OUTLIER = Outlier("outlier", "outlier:BASE,LONG (every sequence BASE but one LONG)", whole_arg=True)

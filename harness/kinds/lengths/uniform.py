"""``uniform:LO-HI``: each sequence's length drawn uniformly from the whole numbers LO..HI."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind


@dataclass(frozen=True)
class Uniform(LengthsKind):
    def read(self, split: KindText) -> tuple[int, int]:
        low, dash, high = (split.arg or "").partition("-")
        try:
            low, high = int(low), int(high)
        except ValueError:
            raise split.error("needs two whole numbers LO-HI after the colon, e.g. uniform:64-512") from None
        if not dash or not 1 <= low <= high:
            raise split.error(f"needs 1 <= LO <= HI, got LO={low}, HI={high}; e.g. uniform:64-512")
        split.no_options()
        return (low, high)

    def text(self, arg) -> str:
        return f"uniform:{arg[0]}-{arg[1]}"

    def label(self, arg) -> str:
        return f"uniform{arg[0]}-{arg[1]}"

    def draw(self, arg, count, rng) -> list[int]:
        return [rng.randint(arg[0], arg[1]) for _ in range(count)]


UNIFORM = Uniform("uniform", "uniform:LO-HI (lengths uniform in LO..HI)")

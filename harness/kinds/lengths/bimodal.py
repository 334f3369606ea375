"""``bimodal:SHORT,LONG,P_LONG``: each sequence is LONG tokens with probability P_LONG, else SHORT."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind, numbers, whole


@dataclass(frozen=True)
class Bimodal(LengthsKind):
    def read(self, split: KindText) -> tuple[int, int, float]:
        short, long, p_long = numbers(split, ("SHORT", "LONG", "P_LONG"), "bimodal:64,1024,0.1")
        if not 0 <= p_long <= 1:
            raise split.error(f"P_LONG is a probability (0 to 1), got {p_long}")
        return (whole(short, "SHORT", split), whole(long, "LONG", split), p_long)

    def draw(self, arg, count, rng) -> list[int]:
        short, long, p_long = arg
        return [long if rng.random() < p_long else short for _ in range(count)]


BIMODAL = Bimodal("bimodal", "bimodal:SHORT,LONG,P_LONG (LONG with probability P_LONG, else SHORT)", whole_arg=True)

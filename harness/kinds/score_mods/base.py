"""What a score-mod kind gives: its ``score_mod`` for a case, its cap, and whether it is an additive bias."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnbench.kinds.family import Kind

ScoreMod = Callable[..., Any]


@dataclass(frozen=True)
class ScoreModKind(Kind):
    """A kind of the `score_mod` axis: it rewrites each scaled score ``s = q·k / √d`` before the mask and the softmax.

    `additive`: the mod only adds a bias that does not depend on the score, so
    an SDPA float mask can carry it (`attnbench.attention.score_mods.score_bias`).
    """

    additive: bool = False

    def score_mod(self, case, arg: Any, device=None) -> ScoreMod | None:
        """The Flex ``score_mod(score, b, h, q_idx, kv_idx)`` of `case`; None when scores stay as they are."""
        return None

    def cap(self, arg: Any) -> float | None:
        """C for kernels that take a soft cap as a number; None for every other kind."""
        return None

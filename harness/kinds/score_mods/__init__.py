"""The kinds of the `score_mod` axis, one file each; `SCORE_MODS` is their registry (``SCORE_MODS.register`` adds one)."""

from __future__ import annotations

from attnbench.kinds.family import Chosen, KindFamily
from attnbench.kinds.score_mods.alibi import ALIBI
from attnbench.kinds.score_mods.base import ScoreMod, ScoreModKind
from attnbench.kinds.score_mods.none import NONE
from attnbench.kinds.score_mods.softcap import SOFTCAP

SCORE_MODS = KindFamily("score_mod", (NONE, ALIBI, SOFTCAP))
__all__ = ["SCORE_MODS", "ScoreMod", "ScoreModKind", "score_mod_of"]


def score_mod_of(case) -> Chosen:
    """The parsed `score_mod` of `case` (``none`` for an object without one)."""
    return SCORE_MODS.parse(getattr(case, "score_mod", "none"))

"""The kinds of the `score_mod` axis, one file each; `SCORE_MODS` is their registry (``SCORE_MODS.register`` adds one).

A score mod rewrites each scaled score before the mask and the softmax
(`base`): ``none``, ``alibi`` (ALiBi's per-head distance penalty) and
``softcap:C`` (``C · tanh(s / C)``). A variant or a reference reads a case's
mod through `case_score_mod`, `case_softcap` and `score_bias`.
"""

from __future__ import annotations

from attnbench.kinds.family import Chosen, KindFamily
from attnbench.kinds.score_mods.alibi import ALIBI, alibi_slopes
from attnbench.kinds.score_mods.base import NONE, ScoreMod, ScoreModKind, apply_score_mod
from attnbench.kinds.score_mods.softcap import SOFTCAP

SCORE_MODS = KindFamily("score_mod", (NONE, ALIBI, SOFTCAP))
__all__ = ["SCORE_MODS", "ScoreMod", "ScoreModKind", "alibi_slopes", "apply_score_mod", "case_score_mod",
           "case_softcap", "score_bias", "score_mod_of"]


def score_mod_of(case) -> Chosen:
    """The parsed `score_mod` of `case` (``none`` for an object without one)."""
    return SCORE_MODS.parse(getattr(case, "score_mod", "none"))


def case_score_mod(case, device=None) -> ScoreMod | None:
    """The Flex ``score_mod`` of `case`'s `score_mod` axis, or None for ``none``."""
    chosen = score_mod_of(case)
    return chosen.kind.score_mod(case, chosen.arg, device=device)


def case_softcap(case) -> float | None:
    """C of a ``softcap:C`` case, else None (for kernels that take the cap as a number)."""
    chosen = score_mod_of(case)
    return chosen.kind.cap(chosen.arg)


def score_bias(case, *, dtype=None, rows=None, device=None):
    """(H, R, M) additive bias of `case`'s score mod (ALiBi) as an SDPA float mask, or None for ``none``;
    ValueError naming the additive kinds for a mod that is not a bias."""
    chosen = score_mod_of(case)
    if not chosen.kind.additive and chosen.kind.score_mod(case, chosen.arg) is not None:
        additive = ", ".join(kind.name for kind in SCORE_MODS if kind.additive)
        raise ValueError(f"score_mod {chosen.text} is not an additive bias; only {additive} is")
    return chosen.kind.bias(case, chosen.arg, dtype=dtype, rows=rows, device=device)

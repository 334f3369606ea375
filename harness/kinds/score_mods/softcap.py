"""``softcap:C``: ``C · tanh(s / C)`` (Gemma 2's logit soft-capping, flash-attn's ``softcap``)."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.score_mods.base import ScoreMod, ScoreModKind


def softcap_score_mod(cap: float) -> ScoreMod:
    """The soft-capping score mod: ``cap · tanh(score / cap)``."""
    def softcap(score, b, h, q_idx, kv_idx):
        return (score / cap).tanh() * cap

    return softcap


@dataclass(frozen=True)
class Softcap(ScoreModKind):
    def read(self, split: KindText) -> float:
        cap = split.number("softcap:50")
        if not cap > 0 or cap != cap or cap == float("inf"):
            raise split.error("the cap must be a positive finite number, e.g. softcap:50")
        split.no_options()
        return cap

    def score_mod(self, case, cap: float, device=None) -> ScoreMod:
        return softcap_score_mod(cap)

    def cap(self, cap: float) -> float:
        return cap


SOFTCAP = Softcap("softcap", "softcap:C (each scaled score s becomes C·tanh(s/C), as Gemma 2 and Grok do)")

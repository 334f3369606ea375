"""The `score_mod` axis of a case as text: ``none``, ``alibi``, ``softcap:C``.

Pure Python (no torch), so a `Case` can check its score mod wherever it is
built. The functions themselves are in `attnbench.attention.score_mods`; the
names follow attention-gym's and flash-attn's.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import split_kind

SCORE_MOD_KINDS = ("none", "alibi", "softcap")
SCORE_MOD_HELP = ("none, alibi (ALiBi's per-head linear distance penalty with the standard slopes 2^(-8(h+1)/H)), "
                  "or softcap:C (each scaled score s becomes C·tanh(s/C), as Gemma 2 and Grok do)")


@dataclass(frozen=True)
class ScoreModSpec:
    """A parsed score mod: its kind and its cap (C of ``softcap:C``; None otherwise)."""

    kind: str = "none"
    cap: float | None = None

    @property
    def text(self) -> str:
        if self.cap is None:
            return self.kind
        return f"{self.kind}:{int(self.cap) if float(self.cap).is_integer() else self.cap}"


def parse_score_mod(text: str) -> ScoreModSpec:
    """'softcap:50' -> ScoreModSpec('softcap', 50.0); ValueError saying what is accepted."""
    split = split_kind(text, "score_mod", SCORE_MOD_KINDS, SCORE_MOD_HELP)
    if split.kind in ("none", "alibi"):
        split.bare()
        return ScoreModSpec(split.kind)
    cap = split.number("softcap:50")
    if not cap > 0 or cap != cap or cap == float("inf"):
        raise split.error("the cap must be a positive finite number, e.g. softcap:50")
    split.no_options()
    return ScoreModSpec(split.kind, cap)

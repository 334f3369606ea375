"""``none``: the scaled scores as they are."""

from __future__ import annotations

from attnbench.kinds.score_mods.base import ScoreModKind

NONE = ScoreModKind("none", "none")

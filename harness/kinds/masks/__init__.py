"""The kinds of the `mask` axis, one file each; `MASKS` is their registry (``MASKS.register`` adds one)."""

from __future__ import annotations

from attnbench.kinds.family import Chosen, KindFamily
from attnbench.kinds.masks.base import MaskKind, SizedMask
from attnbench.kinds.masks.document import DOCUMENT
from attnbench.kinds.masks.none import NONE
from attnbench.kinds.masks.prefix_lm import PREFIX_LM
from attnbench.kinds.masks.sliding_window import SLIDING_WINDOW

MASKS = KindFamily("mask", (NONE, SLIDING_WINDOW, DOCUMENT, PREFIX_LM))
__all__ = ["MASKS", "MaskKind", "SizedMask", "mask_of"]


def mask_of(case) -> Chosen:
    """The parsed `mask` of `case` (``none`` for an object without one)."""
    return MASKS.parse(getattr(case, "mask", "none"))

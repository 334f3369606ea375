"""The kinds of the `lengths` axis (per-sequence lengths of a ragged batch), one file each.

`LENGTHS` is their registry (``LENGTHS.register`` adds one); `RaggedBatch`
(`attnbench.kinds.lengths.batch`) is a case's drawn batch and its work counts.
"""

from __future__ import annotations

from attnbench.kinds.family import Chosen, KindFamily
from attnbench.kinds.lengths.base import LengthsKind
from attnbench.kinds.lengths.bimodal import BIMODAL
from attnbench.kinds.lengths.file import FILE
from attnbench.kinds.lengths.fixed import FIXED
from attnbench.kinds.lengths.lognormal import LOGNORMAL
from attnbench.kinds.lengths.mixed import MIXED
from attnbench.kinds.lengths.outlier import OUTLIER
from attnbench.kinds.lengths.uniform import UNIFORM

LENGTHS = KindFamily("lengths", (FIXED, UNIFORM, LOGNORMAL, BIMODAL, OUTLIER, FILE, MIXED))
LAYOUTS = ("padded", "packed")
__all__ = ["LAYOUTS", "LENGTHS", "LengthsKind", "lengths_of"]


def lengths_of(case) -> Chosen:
    """The parsed `lengths` of `case` (``fixed`` for an object without one)."""
    return LENGTHS.parse(getattr(case, "lengths", "fixed"))

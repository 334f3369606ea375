"""The kinds of the `inputs` axis, one file each; `INPUTS` is their registry (``INPUTS.register`` adds one)."""

from __future__ import annotations

from attnbench.kinds.family import Chosen, KindFamily
from attnbench.kinds.inputs.base import InputKind, Parametrised
from attnbench.kinds.inputs.clustered import CLUSTERED
from attnbench.kinds.inputs.file import FILE
from attnbench.kinds.inputs.iid import IID
from attnbench.kinds.inputs.local import LOCAL
from attnbench.kinds.inputs.outliers import OUTLIERS
from attnbench.kinds.inputs.sinks import SINKS

INPUTS = KindFamily("inputs", (IID, OUTLIERS, CLUSTERED, LOCAL, SINKS, FILE))
__all__ = ["INPUTS", "InputKind", "Parametrised", "inputs_of"]


def inputs_of(case) -> Chosen:
    """The parsed `inputs` of `case`."""
    return INPUTS.parse(case.inputs)

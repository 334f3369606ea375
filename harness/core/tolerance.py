"""Accuracy tolerances: the error a correct kernel stays under, per dtype, for the output and the gradients.

Modelled on xformers' per-op ``ERROR_ATOL`` / ``ERROR_RTOL``: every variant
declares one `Tolerance` per dtype (`Variant.tolerances`); exact kernels share
`DEFAULT_TOLERANCES`. Errors are measured against the float64 reference of the
variant's own function on the same low-precision inputs upcast (see
ARCHITECTURE, "Accuracy, defined"), so the bounds only cover the kernel's own
rounding and accumulation, with headroom of about 4-10x over what the
built-in kernels reach on seq_len 64 to 4096.

No torch here: `harness.core.variant` imports this at module import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from harness.core.case import DTYPES


@dataclass(frozen=True)
class Tolerance:
    """Bounds on the error of one dtype, against the float64 reference.

    rel_l2, max_abs: the output's relative L2 error ‖out − ref‖ / ‖ref‖ and
        its largest absolute error.
    grad_rel_l2, grad_max_abs: the same for each of dq, dk, dv in ``fwd_bwd``
        mode; None leaves the gradients unjudged (they are still reported).
    """

    rel_l2: float
    max_abs: float
    grad_rel_l2: float | None = None
    grad_max_abs: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"Tolerance.{name} must be a non-negative number or None, got {value!r}")

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def scaled(self, factor: float) -> Tolerance:
        """Every bound times `factor` (a looser kernel: ``DEFAULT_TOLERANCES["bfloat16"].scaled(4)``)."""
        return Tolerance(*(None if value is None else value * factor for value in asdict(self).values()))


# Exact softmax kernels on N(0, 0.5²)/N(0, 1) inputs, seq_len 64-1024, reach at most (rel_l2 / max_abs):
# float32 4.5e-7 / 1.0e-6 (grads 5.1e-7 / 2.9e-6), float16 5.4e-4 / 1.3e-3 (grads 6.3e-4 / 2.5e-3),
# bfloat16 4.4e-3 / 1.3e-2 (grads 5.1e-3 / 2.9e-2), float64 1e-15. The rel_l2 bounds leave about 10x
# for longer rows; an output off by 1% (rel_l2 1e-2) fails float32 and float16.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "float64": Tolerance(rel_l2=1e-12, max_abs=1e-11, grad_rel_l2=1e-12, grad_max_abs=1e-10),
    "float32": Tolerance(rel_l2=5e-6, max_abs=2e-5, grad_rel_l2=5e-6, grad_max_abs=5e-5),
    "float16": Tolerance(rel_l2=4e-3, max_abs=1e-2, grad_rel_l2=5e-3, grad_max_abs=2e-2),
    "bfloat16": Tolerance(rel_l2=3e-2, max_abs=8e-2, grad_rel_l2=4e-2, grad_max_abs=2e-1),
})


def declare_tolerances(own: Mapping[str, Any], inherited: Mapping[str, Tolerance], owner: str) -> Mapping[str, Tolerance]:
    """`inherited` with the dtypes `own` declares replaced: a subclass names only the dtypes it loosens."""
    merged = dict(inherited)
    for dtype, bound in own.items():
        if dtype not in DTYPES:
            raise TypeError(f"{owner}.tolerances: unknown dtype {dtype!r} (dtypes: {', '.join(DTYPES)})")
        if bound is not None and not isinstance(bound, Tolerance):
            raise TypeError(f"{owner}.tolerances[{dtype!r}] must be a Tolerance or None, got {type(bound).__name__}")
        merged[dtype] = bound
    return MappingProxyType({dtype: bound for dtype, bound in merged.items() if bound is not None})

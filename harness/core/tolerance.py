"""Accuracy tolerances: the error a correct kernel stays under, per dtype, for the output and the gradients.

Modelled on xformers' per-op ``ERROR_ATOL`` / ``ERROR_RTOL``: every variant
declares one `Tolerance` per dtype (`Variant.tolerances`); exact kernels share
`DEFAULT_TOLERANCES`. Errors are measured against the float64 reference of the
variant's own function on the same low-precision inputs upcast (see
ARCHITECTURE, "Accuracy, defined"), so the bounds only cover the kernel's own
rounding and accumulation.

Every bound is scale-free: an error is divided by the size of the reference
it is measured against (‖out − ref‖ / ‖ref‖, and max|out − ref| / max|ref|),
so multiplying the values (or the upstream gradient) by any factor leaves the
verdict unchanged. An absolute bound, calibrated on seeded N(0, σ²) inputs,
called a correct Performer inaccurate on a real model's q, k, v (max_abs
5.0e-05 at 1.9e-06 relative error). The bounds are calibrated on seeded inputs
(qk_std 0.5 to 4, seq_len 64 to 4096) and on the q, k, v of a pretrained
model (all-MiniLM-L6-v2 on English text: logits up to 77), with headroom of
3-10x in float32 (about 2x in float16 and bfloat16, whose rounded scores
are far off on large logits) over what the built-in kernels reach there.

No torch here: `attnbench.core.variant` imports this at module import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass
from types import MappingProxyType
from typing import Any

from attnbench.core.case import DTYPES


@dataclass(frozen=True)
class Tolerance:
    """Bounds on the error of one dtype, against the float64 reference, relative to the reference's size.

    rel_l2: the output's relative L2 error ‖out − ref‖ / ‖ref‖.
    max_rel: its largest absolute error over the reference's largest
        magnitude, max|out − ref| / max|ref| (the worst element, in units of
        the output's scale); None leaves it unjudged.
    grad_rel_l2, grad_max_rel: the same for each of dq, dk, dv in ``fwd_bwd``
        mode, each against its own reference gradient; None leaves the
        gradients unjudged (they are still reported).

    ``max_abs`` and ``grad_max_abs`` (absolute bounds, before attnbench judged
    in units that scale) are refused with a TypeError that says what to declare.
    """

    rel_l2: float
    max_rel: float | None = None
    grad_rel_l2: float | None = None
    grad_max_rel: float | None = None
    max_abs: InitVar[float | None] = None
    grad_max_abs: InitVar[float | None] = None

    def __post_init__(self, max_abs: float | None, grad_max_abs: float | None) -> None:
        if max_abs is not None or grad_max_abs is not None:
            raise TypeError("Tolerance(max_abs=..., grad_max_abs=...) are absolute bounds, which attnbench no longer "
                            "reads: declare max_rel / grad_max_rel instead, the largest |out - ref| over the "
                            "largest |ref| (for an output of magnitude about 1 the same number)")
        for name, value in asdict(self).items():
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"Tolerance.{name} must be a non-negative number or None, got {value!r}")

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def scaled(self, factor: float) -> Tolerance:
        """Every bound times `factor` (a looser kernel: ``DEFAULT_TOLERANCES["bfloat16"].scaled(4)``)."""
        return Tolerance(*(None if value is None else value * factor for value in asdict(self).values()))


# Exact softmax kernels reach at most (rel_l2 / max_rel; gradients: the worst of dq, dk, dv) over seeded
# inputs (seq_len 64-4096, qk_std 0.5-4) and MiniLM's q, k, v (512 tokens of text, logits up to 77):
# float32 1.1e-6 / 5.2e-6 (grads 6.8e-6 / 1.2e-5: sdpa-flash's CPU backward, whose error grows with the
# logits, as that of every flash backward that recomputes the weights from the log-sum-exp does);
# float16 1.2e-3 / 1.1e-2 (grads 5.0e-3 / 1.2e-2) and bfloat16 9.0e-3 / 3.5e-2 (grads 3.3e-2 / 4.8e-2):
# naive and longformer, whose scores are rounded to the dtype, on MiniLM's first layer; float64 1e-15.
# An output off by 1% (rel_l2 and max_rel 1e-2) fails float32 and float16.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "float64": Tolerance(rel_l2=1e-12, max_rel=1e-11, grad_rel_l2=1e-12, grad_max_rel=1e-10),
    "float32": Tolerance(rel_l2=5e-6, max_rel=2e-5, grad_rel_l2=2e-5, grad_max_rel=5e-5),
    "float16": Tolerance(rel_l2=4e-3, max_rel=2e-2, grad_rel_l2=1e-2, grad_max_rel=4e-2),
    "bfloat16": Tolerance(rel_l2=3e-2, max_rel=8e-2, grad_rel_l2=8e-2, grad_max_rel=2e-1),
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

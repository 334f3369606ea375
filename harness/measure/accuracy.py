"""Error of an output against its float64 reference, as ARCHITECTURE defines it."""

from __future__ import annotations

import torch

from attnbench.core.result import ErrorMetrics
from attnbench.core.tolerance import Tolerance


def error_metrics(output: torch.Tensor, reference: torch.Tensor) -> ErrorMetrics:
    """Max absolute error, relative L2 error ‖out − ref‖ / ‖ref‖, max relative error, and the non-finite count.

    The max relative error is max|out − ref| / max|ref|: the worst element in
    units of the reference's scale, so it does not change when the values do.
    All are computed in float64 on the CPU. Non-finite outputs make every
    error infinite (they are not silently dropped).
    """
    if output.shape != reference.shape:
        raise ValueError(f"output has shape {tuple(output.shape)} but the reference has {tuple(reference.shape)}")
    out = output.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    nonfinite = int((~torch.isfinite(out)).sum())
    if nonfinite:
        inf = float("inf")
        return ErrorMetrics(max_abs_error=inf, rel_l2_error=inf, nonfinite=nonfinite, max_rel_error=inf)
    diff = out - ref
    rel = _ratio(float(torch.linalg.vector_norm(diff)), float(torch.linalg.vector_norm(ref)))
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    max_rel = _ratio(max_abs, float(ref.abs().max()) if ref.numel() else 0.0)
    return ErrorMetrics(max_abs_error=max_abs, rel_l2_error=rel, nonfinite=0, max_rel_error=max_rel)


def _ratio(error: float, scale: float) -> float:
    """error / scale; a zero reference is matched only exactly (0), else infinitely far off."""
    return error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))


def judge(output: ErrorMetrics, gradients: dict[str, ErrorMetrics], bound: Tolerance | None, *,
          dtype: str, variant: str) -> tuple[bool | None, dict, tuple[str, ...]]:
    """The verdict on one cell's errors: (ok, the bounds used as JSON, the failures as sentences).

    ok is None when there is no bound for this dtype (nothing judged), except
    that non-finite values always fail. Gradients are judged only where the
    bound has gradient limits. A failure reads
    ``output max_rel 1.0e-02 > 2.0e-05 (float32 tolerance of naive)``.
    """
    failures = [f"{name} has {metrics.nonfinite} non-finite values (NaN or inf)"
                for name, metrics in (("output", output), *((f"d{k}", g) for k, g in gradients.items()))
                if metrics.nonfinite]
    if bound is None:
        return (False if failures else None), {}, tuple(failures)
    whose = f"({dtype} tolerance of {variant})"
    checks = [("output", output, bound.rel_l2, bound.max_rel)]
    checks += [(f"d{name}", metrics, bound.grad_rel_l2, bound.grad_max_rel) for name, metrics in gradients.items()]
    for name, metrics, rel_l2, max_rel in checks:
        if metrics.nonfinite:
            continue
        for metric, error, limit in (("rel_l2", metrics.rel_l2_error, rel_l2), ("max_rel", metrics.max_rel_error, max_rel)):
            if limit is not None and error is not None and not error <= limit:
                failures.append(f"{name} {metric} {error:.1e} > {limit:.1e} {whose}")
    return not failures, {"dtype": dtype, **bound.to_dict()}, tuple(failures)


# The per-element bound the variant tests compare with (tests/test_variants_*.py); the verdict
# stored with each cell uses the variant's own `Variant.tolerances` instead (attnbench.core.tolerance).
REL_L2_TOLERANCE = {
    "float64": 1e-10,
    "float32": 2e-5,
    "float16": 5e-3,
    "bfloat16": 3e-2,
}


def tolerance(dtype: str) -> float:
    return REL_L2_TOLERANCE[dtype]

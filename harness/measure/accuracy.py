"""Error of an output against its float64 reference, as ARCHITECTURE defines it."""

from __future__ import annotations

import torch

from harness.core.result import ErrorMetrics


def error_metrics(output: torch.Tensor, reference: torch.Tensor) -> ErrorMetrics:
    """Max absolute error, relative L2 error ‖out − ref‖ / ‖ref‖, and the count of non-finite outputs.

    Both are computed in float64 on the CPU. Non-finite outputs make both
    errors infinite (they are not silently dropped).
    """
    if output.shape != reference.shape:
        raise ValueError(f"output has shape {tuple(output.shape)} but the reference has {tuple(reference.shape)}")
    out = output.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    nonfinite = int((~torch.isfinite(out)).sum())
    if nonfinite:
        return ErrorMetrics(max_abs_error=float("inf"), rel_l2_error=float("inf"), nonfinite=nonfinite)
    diff = out - ref
    ref_norm = float(torch.linalg.vector_norm(ref))
    diff_norm = float(torch.linalg.vector_norm(diff))
    rel = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else float("inf"))
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    return ErrorMetrics(max_abs_error=max_abs, rel_l2_error=rel, nonfinite=0)


# Relative L2 error a correct kernel stays under, against the float64 reference, per dtype.
# Rounding of the output alone is about 2^-(mantissa bits); accumulation over long rows adds a little.
REL_L2_TOLERANCE = {
    "float64": 1e-10,
    "float32": 2e-5,
    "float16": 5e-3,
    "bfloat16": 3e-2,
}


def tolerance(dtype: str) -> float:
    return REL_L2_TOLERANCE[dtype]

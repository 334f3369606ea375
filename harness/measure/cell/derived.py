"""The derived figures of a timed cell: FLOPs, FLOP/s and the fraction of the peak, roofline and traffic.

Pure arithmetic over the case, the variant's counts, the median time and the
run's calibration; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attnbench.core.case import Case
from attnbench.core.variant import Variant
from attnbench.kinds.lengths.batch import is_ragged, ragged_batch
from attnbench.measure.calibration import bandwidth_for, peak_for

# A backward counts 2.5 forwards (the FlashAttention/TritonBench convention): fwd_bwd = 3.5 × forward.
BACKWARD_FLOPS_FACTOR = 2.5


@dataclass(frozen=True)
class DerivedFigures:
    """What a timed cell derives from its median time: `Result`'s FLOP fields and telemetry entries."""

    flops: int | None
    performed_flops: int | None
    flops_per_s: float | None
    peak_fraction: float | None
    telemetry: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def derive_figures(case: Case, variant: Variant, median_s: float, calibration: dict | None) -> DerivedFigures:
    """FLOPs and FLOP/s, the fraction of the calibrated peak, the roofline and the traffic at `median_s`."""
    flops = total_flops(case, variant)
    flops_per_s = flops / median_s if flops and median_s > 0 else None
    peak = peak_for(calibration, case.device, case.dtype)
    peak_fraction = flops_per_s / peak if flops_per_s and peak else None
    warnings = []
    if peak_fraction is not None and peak_fraction > 1.05:
        warnings.append(f"{peak_fraction:.0%} of the calibrated {case.dtype} matmul peak: the calibration "
                        "underestimates this machine (taken under load?); rerun with --recalibrate")
    telemetry: dict = {"arithmetic_intensity": arithmetic_intensity(case, variant)}
    telemetry.update(roofline(telemetry["arithmetic_intensity"], peak, calibration, flops_per_s, case.device))
    telemetry.update(traffic(case, median_s, calibration, variant.bytes_moved(case)))
    telemetry.update(ragged_figures(case))
    if peak is None and flops_per_s:
        telemetry["notes"] = [f"no peak_fraction: the run has no calibrated matmul peak for {case.dtype} "
                              f"on {case.device}"]
    return DerivedFigures(flops=flops, performed_flops=total_flops(case, variant, performed=True),
                          flops_per_s=flops_per_s, peak_fraction=peak_fraction, telemetry=telemetry,
                          warnings=tuple(warnings))


def ragged_figures(case: Case) -> dict:
    """A ragged batch's padding_waste (its layout's pairs over the real ones) and imbalance (the longest
    sequence's pairs over the mean's), `attnbench.kinds.lengths.batch`; empty for a dense batch."""
    if not is_ragged(case):
        return {}
    batch = ragged_batch(case)
    return {"padding_waste": batch.padding_waste(case.layout), "imbalance": batch.imbalance()}


def total_flops(case: Case, variant: Variant, *, performed: bool = False) -> int | None:
    """The cell's FLOPs: the forward's `flops` (or `performed_flops`), times 1 + BACKWARD_FLOPS_FACTOR in fwd_bwd.

    None when the variant has no such count (`flops` not implemented, or `performed_flops` None).
    """
    try:
        forward = variant.performed_flops(case) if performed else variant.flops(case)
    except NotImplementedError:
        return None
    if forward is None:
        return None
    return round(forward * (1 + BACKWARD_FLOPS_FACTOR)) if case.mode == "fwd_bwd" else int(forward)


def arithmetic_intensity(case: Case, variant: Variant) -> float | None:
    """Useful forward FLOPs over the least bytes moved: q, k, v read once and the output written once.

    The forward's intensity in both modes (a backward reads q, k, v, out and
    its gradient and writes three gradients for about 2.5 times the FLOPs,
    so fwd_bwd's intensity is close to it).
    """
    try:
        flops = variant.flops(case)
    except NotImplementedError:
        return None
    return flops / least_bytes(case)


def least_bytes(case: Case) -> int:
    """q, k and v read once and the output written once: `Case.bytes_moved`'s forward, or a ragged batch's
    real tokens only (`RaggedBatch.least_bytes`)."""
    if not is_ragged(case):
        return case.input_bytes + case.output_bytes
    return ragged_batch(case).least_bytes(case.heads, case.kv_heads, case.head_dim, case.v_head_dim,
                                          case.element_bytes)


def traffic(case: Case, median_s: float, calibration: dict | None, declared: int | None = None) -> dict:
    """bytes_moved, the bytes/s that achieves at the median time, and its fraction of the copy bandwidth.

    `declared` is the variant's own count (`Variant.bytes_moved`: a decode step's state), else `Case.bytes_moved`
    (a ragged batch: its real tokens', `least_bytes`).
    """
    if declared is not None:
        moved = declared
    elif is_ragged(case):                                     # the real tokens; fwd_bwd moves 3x, as Case says
        moved = least_bytes(case) * (3 if case.mode == "fwd_bwd" else 1)
    else:
        moved = case.bytes_moved
    out: dict = {"bytes_moved": moved}
    if median_s and median_s > 0:
        out["bytes_per_s"] = moved / median_s
        bandwidth = bandwidth_for(calibration, case.device)
        if bandwidth:
            out["bandwidth_fraction"] = out["bytes_per_s"] / bandwidth
    return out


def roofline(intensity: float | None, peak: float | None, calibration: dict | None,
             flops_per_s: float | None, device: str) -> dict:
    """The roofline's bound for this intensity, min(peak, intensity × copy bandwidth), and the fraction reached."""
    bandwidth = bandwidth_for(calibration, device)
    if not intensity or not peak or not bandwidth:
        return {}
    bound = min(peak, intensity * bandwidth)
    out = {"roofline_flops_per_s": bound, "roofline_bound": "compute" if bound >= peak else "memory"}
    if flops_per_s:
        out["roofline_fraction"] = flops_per_s / bound
    return out

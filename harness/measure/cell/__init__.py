"""Measure one cell in this process, whatever its kind, into a `Result`.

A cell kind (`CellKind`) says which cases it measures and how: the timed
kernel cell (`attnbench.measure.cell.kernel`: setup, timing, memory,
accuracy, derived figures, one module per stage) and the trained task cell
(`attnbench.tasks.cell`). `measure_case` asks the variant whether it can run
the case, then hands it to the first kind that takes it. Runs inside a
worker process; nothing here raises for a problem the variant causes.

Besides timing, memory and accuracy, a cell's `Result.telemetry` holds:

- samples: ``cv`` (coefficient of variation), ``outliers`` (Tukey's fences at
  1.5·IQR: count, indices into ``timing.samples_s``, fences; flagged, never
  dropped), ``rel_ci_half_width`` reached and ``target_rel_ci``,
  ``timed_calls``, ``timed_wall_s``; ``timing.stop_reason`` says what ended
  the repetitions ('ci', 'budget', 'max_reps');
- roofline: ``arithmetic_intensity`` (forward FLOPs over q, k, v read and the
  output written once), and with a calibration ``roofline_flops_per_s``
  (min(peak, intensity × copy bandwidth)), ``roofline_bound``
  ('compute'/'memory') and ``roofline_fraction``;
- traffic: ``bytes_moved`` (`Case.bytes_moved`: the least bytes a call must
  read and write), ``bytes_per_s`` (that over the median time) and, with a
  calibration, ``bandwidth_fraction`` (that over the run's copy bandwidth):
  the figures of a memory-bound cell such as a decode step;
- the sampler (`attnbench.measure.telemetry`, 20 Hz): ``cpu_percent_*``,
  ``rss_bytes_*``, ``cpu_freq_mhz_*`` (mean/min/max, before/after), on CUDA
  ``gpu_util_percent_*``, ``gpu_memory_used_bytes_*``, ``gpu_power_w_*``,
  ``gpu_sm_clock_mhz_*``, ``gpu_throttle_reasons``; ``sampler_busy_fraction``
  is the sampler's own cost; ``load_avg_1m``;
- energy: ``energy_j_per_call`` (the store's ``energy_j`` column),
  ``energy_j_total``, ``energy_interval_s``, ``energy_source``;
- ``worker_live_bytes_after``: what the worker holds after the timed calls
  (resident bytes after releasing free heap pages on the CPU), which the
  local executor compares with its restart budget;
- ``contention``: per timing attempt, the median sample's run-queue wait
  fraction, CPU share and median, the signal used and the limit, and whether
  the cell stayed contended (see `attnbench.measure.contention`);
- ``setup_parts``: `setup_s` split into ``compile_s`` (torch.compile, cache loads
  included), ``prepare_s`` (the rest of `prepare`: weights, masks, block masks)
  and ``first_call_s`` (`attnbench.measure.setup_parts`);
- ``execution``: which way of computing the function ran, for a variant that
  chooses per case (`Variant.execution`: longformer's 'banded' or 'dense');
- ``notes``: counters that are missing here (a note, not an error);
- with ``--processes K``: ``processes`` (see `attnbench.measure.merge`).

Warnings (high variation, load above the core count, CPU frequency change,
GPU throttling) go to `Result.warnings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.core.case import Case
from attnbench.core.failures import describe_exception
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import Variant
from attnbench.measure.cell.kernel import measure_kernel
from attnbench.store import now_iso


@dataclass(frozen=True)
class CellKind:
    """One kind of cell: which cases it takes, and how it measures one (`measure(case, variant, settings,
    calibration, progress, **base) -> Result`, never raising for what the variant does)."""

    name: str
    takes: Callable[[Case], bool]
    measure: Callable[..., Result]


def _measure_task(case, variant, settings, calibration, progress, **base) -> Result:
    from attnbench.tasks.cell import measure_quality

    return measure_quality(case, variant, progress, **base)


def _measure_kernel(case, variant, settings, calibration, progress, **base) -> Result:
    return measure_kernel(case, variant, settings, calibration, **base)


CELL_KINDS: tuple[CellKind, ...] = (
    CellKind("task", lambda case: case.is_quality, _measure_task),
    CellKind("kernel", lambda case: True, _measure_kernel),
)


def cell_kind(case: Case) -> CellKind:
    """The kind that measures `case`: the first of `CELL_KINDS` that takes it."""
    return next(kind for kind in CELL_KINDS if kind.takes(case))


def measure_case(case: Case, variant: Variant, settings: MeasureSettings,
                 calibration: dict | None = None, progress: Callable[[int, int, float], None] | None = None) -> Result:
    """Measure `case` with `variant`; never raises for what the variant does.

    A quality cell (`Case.task` set) is trained instead (`attnbench.tasks`);
    `progress(step, steps, loss)` hears its steps.
    """
    base = dict(started_at=now_iso(), worker={"threads": torch.get_num_threads()})
    try:
        reasons = variant.unsupported_reasons(case)
    except Exception as exc:
        return Result("error", f"unsupported_reasons raised {describe_exception(exc)}", **base)
    if reasons:
        return Result("unsupported", "; ".join(reasons), **base)
    return cell_kind(case).measure(case, variant, settings, calibration, progress, **base)

"""The timing stage of a timed cell: warm-up and adaptive repetitions under the sampler, re-measured while contended."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnbench.core.case import Case
from attnbench.core.result import Timing
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell.setup import Prepared, Step
from attnbench.measure.cell.watch import CellTelemetry
from attnbench.measure.contention import measure_until_quiet
from attnbench.measure.memory import leak_warning, live_bytes
from attnbench.measure.stats import coefficient_of_variation, summarize, tukey_outliers
from attnbench.measure.telemetry import telemetry_warnings
from attnbench.measure.timing import TimedSamples, time_cpu, time_cuda


@dataclass(frozen=True)
class TimingStage:
    """The stage's `Timing`, the telemetry it gathered and the warnings it raised."""

    timing: Timing
    telemetry: dict
    warnings: tuple[str, ...]


def measure_timing(case: Case, prepared: Prepared, settings: MeasureSettings) -> TimingStage:
    """Time `prepared.step`: samples, their summary and quality, contention, the sampler's figures, leaks."""
    step = prepared.step
    threads = torch.get_num_threads()
    held_before = live_bytes(case.device)
    watch = CellTelemetry(case, settings)
    with watch:
        measured = measure_until_quiet(lambda: _time_once(case, step, settings, watch), settings)
    timed = measured.timed
    telemetry = watch.summary(timed)
    summary = summarize(timed.samples_s)
    telemetry.update(timing_quality(timed, summary, settings))
    telemetry["contention"] = measured.telemetry()
    warnings = list(telemetry_warnings(telemetry, cv=telemetry["cv"], cv_limit=settings.warn_cv))
    contended = measured.warning(threads)
    warnings.extend([contended] if contended else [])
    timing = Timing(samples_s=timed.samples_s, median_s=summary.median, iqr_s=summary.iqr,
                    ci_low_s=summary.ci_low, ci_high_s=summary.ci_high,
                    calls_per_sample=timed.calls_per_sample, warmup_s=timed.warmup_s,
                    warmup_calls=timed.warmup_calls, setup_s=prepared.setup_s, stop_reason=timed.stop_reason,
                    timer=timed.timer, threads=threads, cpu_share=timed.cpu_share,
                    contended=measured.contended, attempts=measured.attempts)
    held_after = live_bytes(case.device)
    telemetry["worker_live_bytes_after"] = held_after
    leak = leak_warning(held_before, held_after, timed.warmup_calls + timed.timed_calls)
    warnings.extend([leak] if leak else [])
    return TimingStage(timing, telemetry, tuple(warnings))


def _time_once(case: Case, step: Step, settings: MeasureSettings, watch: CellTelemetry) -> TimedSamples:
    """One attempt at the timed repetitions (warm-up included), with the energy read around them."""
    if case.device == "cuda":
        return time_cuda(step, settings, on_timed_start=watch.timed_start, on_timed_stop=watch.timed_stop)
    return time_cpu(step, settings, threads=torch.get_num_threads(), on_timed_start=watch.timed_start,
                    on_timed_stop=watch.timed_stop)


def timing_quality(timed: TimedSamples, summary, settings: MeasureSettings) -> dict:
    """Telemetry about the samples themselves: spread, outliers (flagged, never dropped), the stop."""
    outliers = tukey_outliers(timed.samples_s)
    return {
        "cv": coefficient_of_variation(timed.samples_s),
        "outliers": outliers.to_dict(),
        "rel_ci_half_width": summary.rel_half_width if math.isfinite(summary.rel_half_width) else None,
        "target_rel_ci": settings.target_rel_ci,
        "timed_wall_s": timed.timed_wall_s,
        "timed_calls": timed.timed_calls,
    }

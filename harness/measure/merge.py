"""One cell measured in K fresh worker processes, merged into one `Result` (pure data; no torch).

The driver merges (`attnbench.engine.worker`), so this module imports only
the store's types and the order statistics.
"""

from __future__ import annotations

from dataclasses import replace

from attnbench.core.result import Result
from attnbench.measure.stats import (
    coefficient_of_variation,
    relative_spread,
    summarize,
    tukey_outliers,
)


def merge_process_results(results: list[Result]) -> Result:
    """One cell measured in K fresh processes: one Result keeping the spread between processes.

    The cell's `median_s` is the median of the K per-process medians: each
    fresh process (its own allocations, memory layout, clocks) counts once,
    however many samples its adaptive stop took, so one unlucky process moves
    it least. `samples_s` holds every process's samples, in process order.
    The interval is the hull of the pooled samples' 95% interval of the
    median and the range of the process medians, so it is never narrower
    than what the processes disagree by. IQR is of the pooled samples.
    `telemetry["processes"]` keeps each process's median, sample count and
    stop reason, and the spread (max - min) / median. Memory and accuracy are
    the first process's; warnings are merged. `cpu_share` pools every
    process's shares; the cell is contended if any process's was (its
    median may be the one in the middle), `attempts` is the most any took.
    A cell is ok only if every process was; otherwise the first failure is
    returned, with the others noted.
    """
    if not results:
        raise ValueError("no results to merge")
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if r.status != "ok" or r.timing is None]
    if failed:
        first = failed[0]
        note = f"{len(failed)} of {len(results)} processes failed; this is the first failure"
        return replace(first, warnings=tuple(dict.fromkeys((*first.warnings, note))))
    medians = [r.timing.median_s for r in results]
    pooled = [x for r in results for x in r.timing.samples_s]
    pooled_summary = summarize(pooled)
    middle = summarize(medians).median
    first = results[0]
    low = None if pooled_summary.ci_low is None else min(pooled_summary.ci_low, *medians)
    high = None if pooled_summary.ci_high is None else max(pooled_summary.ci_high, *medians)
    timing = replace(first.timing, samples_s=tuple(pooled), median_s=middle, iqr_s=pooled_summary.iqr,
                     ci_low_s=low, ci_high_s=high,
                     stop_reason=",".join(dict.fromkeys(r.timing.stop_reason for r in results)),
                     calls_per_sample=first.timing.calls_per_sample)
    timing = replace(timing, cpu_share=tuple(x for r in results for x in r.timing.cpu_share),
                     contended=any(r.timing.contended for r in results),
                     attempts=max(r.timing.attempts for r in results))
    telemetry = dict(first.telemetry)
    telemetry["processes"] = {
        "count": len(results),
        "medians_s": medians,
        "sample_counts": [r.timing.reps for r in results],
        "calls_per_sample": [r.timing.calls_per_sample for r in results],
        "stop_reasons": [r.timing.stop_reason for r in results],
        "contended": [r.timing.contended for r in results],
        "pids": [r.worker.get("pid") for r in results],
        "spread_rel": relative_spread(medians),
        "median_rule": "median of the per-process medians",
    }
    telemetry["outliers"] = tukey_outliers(pooled).to_dict()
    telemetry["cv"] = coefficient_of_variation(pooled)
    energies = [r.telemetry.get("energy_j_per_call") for r in results]
    if all(e is not None for e in energies):
        telemetry["energy_j_per_call"] = sum(energies) / len(energies)
    warnings = tuple(dict.fromkeys(w for r in results for w in r.warnings))
    flops_per_s = first.flops / middle if first.flops and middle > 0 else None
    peak_fraction = None
    if first.peak_fraction and first.flops_per_s:
        peak_fraction = first.peak_fraction * flops_per_s / first.flops_per_s
    duration = sum(r.duration_s or 0.0 for r in results)
    return replace(first, timing=timing, telemetry=telemetry, warnings=warnings, flops_per_s=flops_per_s,
                   peak_fraction=peak_fraction, duration_s=duration)

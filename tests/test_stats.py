"""Order statistics against their definitions: the median's interval, Tukey's fences, merging K processes."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from attnbench.core.result import Result, Timing
from attnbench.measure.merge import merge_process_results
from attnbench.measure.stats import (
    coefficient_of_variation,
    interval_text,
    median_interval,
    min_samples_for_interval,
    relative_spread,
    summarize,
    tukey_outliers,
)


def brute_force_ranks(count: int, confidence: float = 0.95) -> tuple[int, int]:
    """The narrowest symmetric [x_(lo), x_(n-1-lo)] whose binomial coverage reaches `confidence`."""
    best = (0, count - 1)
    pmf = [math.comb(count, i) / 2 ** count for i in range(count + 1)]
    for lo in range(count // 2 + 1):
        hi = count - 1 - lo
        if hi <= lo:
            break
        if sum(pmf[lo + 1: hi + 1]) >= confidence:
            best = (lo, hi)
        else:
            break
    return best


@pytest.mark.parametrize("count", list(range(1, 40)) + [57, 100, 257])
def test_the_interval_is_the_binomial_order_statistics_or_none(count):
    rng = np.random.default_rng(count)
    samples = list(rng.lognormal(0.0, 0.3, size=count))
    ordered = sorted(samples)
    summary = summarize(samples)
    lo, hi = brute_force_ranks(count)
    coverage = sum(math.comb(count, i) for i in range(lo + 1, hi + 1)) / 2 ** count
    if coverage >= 0.95:
        assert (summary.ci_low, summary.ci_high) == (ordered[lo], ordered[hi])
        assert summary.confidence_reached
    else:
        assert summary.ci_low is None and summary.ci_high is None
        assert not summary.confidence_reached and summary.rel_half_width == math.inf
        assert interval_text(summary.median, summary.ci_low, summary.ci_high, count) == f"n={count}, no interval"


def test_min_samples_for_an_interval():
    # [min, max] misses the median with probability 2·2^-n: 6 samples reach 95% (1 - 2/64), 8 reach 99%.
    assert min_samples_for_interval(0.95) == 6
    assert min_samples_for_interval(0.99) == 8
    assert median_interval([1.0, 2.0, 3.0]) is None
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)


def test_textbook_interval_for_100_samples():
    # Conover, Practical Nonparametric Statistics: n = 100 gives the 40th and 61st order statistics.
    values = [float(i) for i in range(1, 101)]
    assert median_interval(values) == (40.0, 61.0)


def test_interval_covers_the_true_median_at_least_95_percent():
    rng = np.random.default_rng(11)
    true_median = 1.0                                     # lognormal(0, s) has median e^0
    for count in (6, 7, 12, 30):
        covered = 0
        trials = 600
        for _ in range(trials):
            summary = summarize(list(rng.lognormal(0.0, 0.5, size=count)))
            covered += summary.ci_low <= true_median <= summary.ci_high
        assert covered / trials >= 0.93, (count, covered / trials)


def test_too_few_samples_never_count_as_a_tight_interval():
    five = summarize([1.0, 1.0, 1.0, 1.0, 1.0])
    assert not five.confidence_reached and five.rel_half_width == math.inf
    six = summarize([1.0] * 6)
    assert six.confidence_reached and six.rel_half_width == 0.0


def test_summarize_matches_numpy():
    rng = np.random.default_rng(3)
    samples = list(rng.lognormal(0.0, 0.2, size=101))
    summary = summarize(samples)
    assert summary.median == pytest.approx(np.median(samples))
    assert summary.iqr == pytest.approx(np.percentile(samples, 75) - np.percentile(samples, 25))
    ordered = sorted(samples)
    lo, hi = brute_force_ranks(101)
    assert (summary.ci_low, summary.ci_high) == (ordered[lo], ordered[hi])
    assert summary.ci_low <= summary.median <= summary.ci_high


def test_tukey_outliers_flag_without_dropping():
    samples = [10.0, 11.0, 10.5, 10.2, 10.8, 50.0, 10.1, 10.4, 1.0, 10.6]
    outliers = tukey_outliers(samples)
    q1, q3 = np.percentile(samples, [25, 75])
    assert outliers.low_fence == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert outliers.high_fence == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert outliers.indices == (5, 8)
    assert (outliers.low_count, outliers.high_count) == (1, 1)
    assert outliers.to_dict()["count"] == 2
    assert len(samples) == 10  # nothing removed


def test_tukey_no_outliers_in_constant_samples():
    assert tukey_outliers([2.0] * 20).count == 0
    assert tukey_outliers([]).count == 0


def test_coefficient_of_variation_and_spread():
    samples = [1.0, 2.0, 3.0, 4.0]
    assert coefficient_of_variation(samples) == pytest.approx(statistics.stdev(samples) / statistics.mean(samples))
    assert coefficient_of_variation([5.0]) == 0.0
    assert relative_spread([1.0, 1.1, 0.9]) == pytest.approx(0.2)
    assert relative_spread([1.0]) == 0.0


def _result(samples, pid, flops=1000):
    summary = summarize(samples)
    timing = Timing(samples_s=tuple(samples), median_s=summary.median, iqr_s=summary.iqr, ci_low_s=summary.ci_low,
                    ci_high_s=summary.ci_high, calls_per_sample=1, warmup_s=0.1, warmup_calls=3, setup_s=0.01,
                    stop_reason="ci", timer="cpu-perf-counter")
    return Result("ok", timing=timing, flops=flops, flops_per_s=flops / summary.median,
                  peak_fraction=flops / summary.median / 1e6, telemetry={"energy_j_per_call": 2.0},
                  warnings=("w",), worker={"pid": pid}, duration_s=1.0)


def test_merge_process_results_keeps_the_spread():
    runs = [[1.0, 1.1, 0.9, 1.0, 1.05, 0.95], [2.0, 2.1, 1.9, 2.0, 2.0, 2.0, 2.05], [1.2, 1.2, 1.25, 1.15, 1.2, 1.2]]
    results = [_result(s, pid) for s, pid in zip(runs, (11, 12, 13), strict=True)]
    merged = merge_process_results(results)
    medians = [statistics.median(s) for s in runs]
    assert merged.timing.median_s == pytest.approx(statistics.median(medians))  # 1.2
    assert list(merged.timing.samples_s) == [x for s in runs for x in s]
    assert merged.timing.ci_low_s <= min(medians) and merged.timing.ci_high_s >= max(medians)
    processes = merged.telemetry["processes"]
    assert processes["count"] == 3 and processes["pids"] == [11, 12, 13]
    assert processes["medians_s"] == pytest.approx(medians)
    assert processes["spread_rel"] == pytest.approx((2.0 - 1.0) / 1.2)
    assert merged.flops_per_s == pytest.approx(1000 / 1.2)
    assert merged.peak_fraction == pytest.approx(1000 / 1.2 / 1e6)
    assert merged.telemetry["energy_j_per_call"] == 2.0
    assert merged.warnings == ("w",)
    assert Result.from_dict(merged.to_dict()) == merged


def test_merge_reports_a_failed_process():
    ok = _result([1.0] * 6, 1)
    crashed = Result("crashed", "the worker died", worker={"pid": 2})
    merged = merge_process_results([ok, crashed])
    assert merged.status == "crashed"
    assert "1 of 2 processes failed" in merged.warnings[-1]

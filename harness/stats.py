"""Order statistics of timing samples: median, IQR and a distribution-free interval of the median.

Pure Python (no numpy or torch) so the store and reports can use it anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleSummary:
    median: float
    iqr: float
    ci_low: float
    ci_high: float
    count: int

    @property
    def rel_half_width(self) -> float:
        """Half the interval's width over the median (0.02 means ±2%)."""
        if self.median <= 0:
            return math.inf
        return (self.ci_high - self.ci_low) / 2 / self.median


def quantile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def median_ci_ranks(count: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the order statistics bounding the median with `confidence`.

    The number of samples below the true median is Binomial(count, 1/2); the
    interval [x_(lo), x_(hi)] covers the median with probability
    P(lo < B <= hi) = P(lo + 1 <= B <= hi), chosen symmetric and as narrow as
    reaches `confidence`. With too few samples it is the whole range.
    """
    if count <= 0:
        raise ValueError("no samples")
    pmf = [math.exp(_log_binom(count, i) - count * math.log(2)) for i in range(count + 1)]
    best = (0, count - 1)
    for lo in range(0, count // 2 + 1):
        hi = count - 1 - lo
        if hi <= lo:
            break
        coverage = sum(pmf[lo + 1: hi + 1])
        if coverage >= confidence:
            best = (lo, hi)
        else:
            break
    return best


def _log_binom(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def summarize(samples: Sequence[float], confidence: float = 0.95) -> SampleSummary:
    """Median, interquartile range and the `confidence` interval of the median."""
    ordered = sorted(samples)
    lo, hi = median_ci_ranks(len(ordered), confidence)
    return SampleSummary(
        median=quantile(ordered, 0.5),
        iqr=quantile(ordered, 0.75) - quantile(ordered, 0.25),
        ci_low=ordered[lo],
        ci_high=ordered[hi],
        count=len(ordered),
    )

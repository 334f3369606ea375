"""Order statistics of timing samples: median, IQR, a distribution-free interval of the median, outliers.

Pure Python (no numpy or torch) so the store and reports can use it anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TUKEY_K = 1.5


@dataclass(frozen=True)
class SampleSummary:
    """The median of the samples with its `confidence` interval [ci_low, ci_high].

    confidence_reached is False when there are too few samples for any pair of
    order statistics to cover the median with the asked confidence (fewer than
    6 at 95%); the interval is then the whole range, and `rel_half_width` is
    infinite so that no stopping rule mistakes it for a tight one.
    """

    median: float
    iqr: float
    ci_low: float
    ci_high: float
    count: int
    confidence_reached: bool = True

    @property
    def rel_half_width(self) -> float:
        """Half the interval's width over the median (0.02 means ±2%)."""
        if self.median <= 0 or not self.confidence_reached:
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


def median_ci_coverage(count: int, lo: int, hi: int) -> float:
    """Probability that [x_(lo), x_(hi)] (0-based order statistics) covers the true median.

    The number B of samples below the median is Binomial(count, 1/2); the
    interval covers it when lo + 1 <= B <= hi.
    """
    return sum(math.exp(_log_binom(count, i) - count * math.log(2)) for i in range(lo + 1, hi + 1))


def median_ci_ranks(count: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the order statistics bounding the median with `confidence`.

    The number of samples below the true median is Binomial(count, 1/2); the
    interval [x_(lo), x_(hi)] covers the median with probability
    P(lo < B <= hi) = P(lo + 1 <= B <= hi), chosen symmetric and as narrow as
    reaches `confidence`. With too few samples it is the whole range (check
    `median_ci_coverage` or `SampleSummary.confidence_reached`).

    Linear in `count`: the binomial tail is accumulated from the outside in,
    and the symmetric interval with lo excluded ranks on each side covers
    1 - 2·P(B <= lo).
    """
    if count <= 0:
        raise ValueError("no samples")
    alpha_each_side = (1 - confidence) / 2
    tail = 0.0  # P(B <= lo)
    best = (0, count - 1)
    for lo in range(0, count // 2 + 1):
        hi = count - 1 - lo
        if hi <= lo:
            break
        tail += math.exp(_log_binom(count, lo) - count * math.log(2))
        if tail <= alpha_each_side + 1e-12:
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
    reached = (lo, hi) != (0, len(ordered) - 1) or median_ci_coverage(len(ordered), lo, hi) >= confidence
    return SampleSummary(
        median=quantile(ordered, 0.5),
        iqr=quantile(ordered, 0.75) - quantile(ordered, 0.25),
        ci_low=ordered[lo],
        ci_high=ordered[hi],
        count=len(ordered),
        confidence_reached=reached,
    )


@dataclass(frozen=True)
class Outliers:
    """Samples outside Tukey's fences [Q1 - k·IQR, Q3 + k·IQR]; flagged, never dropped."""

    indices: tuple[int, ...]
    low_fence: float
    high_fence: float
    low_count: int
    high_count: int

    @property
    def count(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict:
        return {"count": self.count, "indices": list(self.indices), "low_count": self.low_count,
                "high_count": self.high_count, "low_fence_s": self.low_fence, "high_fence_s": self.high_fence,
                "rule": f"Tukey's fences, {TUKEY_K:g}·IQR"}


def tukey_outliers(samples: Sequence[float], k: float = TUKEY_K) -> Outliers:
    """Indices (in sample order) of the samples outside Q1 - k·IQR and Q3 + k·IQR."""
    if not samples:
        return Outliers((), math.nan, math.nan, 0, 0)
    ordered = sorted(samples)
    q1, q3 = quantile(ordered, 0.25), quantile(ordered, 0.75)
    low, high = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    below = [i for i, x in enumerate(samples) if x < low]
    above = [i for i, x in enumerate(samples) if x > high]
    return Outliers(tuple(sorted(below + above)), low, high, len(below), len(above))


def coefficient_of_variation(samples: Sequence[float]) -> float:
    """Sample standard deviation over the mean (0 for fewer than two samples)."""
    count = len(samples)
    if count < 2:
        return 0.0
    mean = sum(samples) / count
    if mean <= 0:
        return math.inf
    variance = sum((x - mean) ** 2 for x in samples) / (count - 1)
    return math.sqrt(variance) / mean


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median of a few values, such as per-process medians (0 for one value)."""
    if len(values) < 2:
        return 0.0
    middle = quantile(sorted(values), 0.5)
    return (max(values) - min(values)) / middle if middle > 0 else math.inf

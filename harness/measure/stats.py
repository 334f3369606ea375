"""Order statistics of timing samples: median, IQR, a distribution-free interval of the median, outliers.

The interval of the median is SciPy's (`scipy.stats.quantile_test(...).confidence_interval`):
the pair of order statistics that covers the true median with at least the
asked confidence, whatever the distribution. With fewer samples than
`min_samples_for_interval` (6 at 95%) no such pair exists, and the summary
says so instead of passing the range off as an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats  # imported with the module, so no cell pays for it inside its timing loop

TUKEY_K = 1.5
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SampleSummary:
    """The median of the samples with its `confidence` interval [ci_low, ci_high].

    ci_low and ci_high are None when there are too few samples for any pair
    of order statistics to cover the median with the asked confidence; then
    `rel_half_width` is infinite so that no stopping rule mistakes it for a
    tight interval, and `interval_text` says "n=3, no interval".
    """

    median: float
    iqr: float
    ci_low: float | None
    ci_high: float | None
    count: int

    @property
    def confidence_reached(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    @property
    def rel_half_width(self) -> float:
        """Half the interval's width over the median (0.02 means ±2%)."""
        if self.median <= 0 or not self.confidence_reached:
            return math.inf
        return (self.ci_high - self.ci_low) / 2 / self.median


def min_samples_for_interval(confidence: float = CONFIDENCE) -> int:
    """Fewest samples whose extreme order statistics cover the median with `confidence`.

    [min, max] misses the median only when every sample falls on one side of
    it, with probability 2 · 2^-n; so n must reach log2(2 / (1 - confidence)).
    """
    return math.ceil(math.log2(2 / (1 - confidence)) - 1e-12)


def median_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """SciPy's distribution-free `confidence` interval of the median, or None with too few samples."""
    if len(samples) < min_samples_for_interval(confidence):
        return None
    values = np.asarray(samples, dtype=float)
    interval = stats.quantile_test(values, q=float(np.median(values)), p=0.5).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


def quantile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples: Sequence[float], confidence: float = CONFIDENCE) -> SampleSummary:
    """Median, interquartile range and the `confidence` interval of the median (None if unreachable)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    interval = median_interval(ordered, confidence)
    return SampleSummary(
        median=quantile(ordered, 0.5),
        iqr=quantile(ordered, 0.75) - quantile(ordered, 0.25),
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        count=len(ordered),
    )


def interval_text(median: float | None, low: float | None, high: float | None, count: int | None,
                  fmt=lambda x: f"{x:.3g}") -> str:
    """'[low, high]' for a real 95% interval of the median, else 'n=3, no interval'."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"n={count}, no interval" if count is not None else "no interval"
    return f"[{fmt(low)}, {fmt(high)}]"


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

"""How sure a comparison is: SciPy's tests and intervals for a ratio of timings.

- Two runs (`compare`): the ratio NEW/BASE of median times with a percentile
  bootstrap interval (`scipy.stats.bootstrap`, each side resampled on its
  own, fixed seed) and a two-sided Mann–Whitney U test
  (`scipy.stats.mannwhitneyu`, exact for small samples without ties).
  `min_p_value` says whether the sample counts can reach a significance
  level at all: with 3 samples a side the smallest two-sided p is 0.1.
- Paired A/B (`ab`): per pair, the ratio B/A of the two sides measured back
  to back; the geometric mean of the pair ratios with a Student-t interval
  on their logarithms, so drift that moves both sides of a pair cancels.

numpy and SciPy only (no torch), so a report builds wherever pandas does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class RatioInterval:
    """A ratio and its `confidence` interval."""

    ratio: float
    low: float
    high: float
    confidence: float


def median_ratio_interval(base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> RatioInterval:
    """median(new) / median(base) with SciPy's percentile bootstrap interval (seeded, so repeatable)."""
    from scipy import stats

    base_arr, new_arr = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if base_arr.size == 0 or new_arr.size == 0:
        raise ValueError("a ratio of medians needs samples on both sides")
    ratio = float(np.median(new_arr) / np.median(base_arr))
    if base_arr.size < 2 or new_arr.size < 2:
        return RatioInterval(ratio, math.nan, math.nan, confidence)

    def statistic(new_sample, base_sample, axis=-1):
        return np.median(new_sample, axis=axis) / np.median(base_sample, axis=axis)

    result = stats.bootstrap((new_arr, base_arr), statistic, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return RatioInterval(ratio, float(interval.low), float(interval.high), confidence)


@dataclass(frozen=True)
class UTest:
    """Two-sided Mann–Whitney U test: U of the first sample, p value, and the method SciPy used."""

    u: float
    p_value: float
    method: str


def mann_whitney_u(first: Sequence[float], second: Sequence[float]) -> UTest:
    """SciPy's two-sided Mann–Whitney U test (exact without ties on small samples, else asymptotic)."""
    from scipy import stats

    x, y = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("the U test needs samples on both sides")
    ties = np.unique(np.concatenate([x, y])).size < x.size + y.size
    method = "exact" if not ties and max(x.size, y.size) <= 8 else "asymptotic"
    result = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    return UTest(u=float(result.statistic), p_value=float(result.pvalue), method=method)


def min_p_value(n_first: int, n_second: int) -> float:
    """The smallest two-sided p value a U test on samples of these sizes can give: 2 / C(n1 + n2, n1)."""
    if n_first <= 0 or n_second <= 0:
        return 1.0
    return min(1.0, 2 / math.comb(n_first + n_second, n_first))


def can_reach(alpha: float, n_first: int, n_second: int) -> bool:
    """Whether samples of these sizes can be significant at `alpha` at all."""
    return min_p_value(n_first, n_second) < alpha


@dataclass(frozen=True)
class PairedRatio:
    """Paired A/B: the geometric mean of the per-pair ratios B/A, its interval, and the pairs."""

    ratio: float
    low: float
    high: float
    pairs: tuple[float, ...]
    confidence: float
    p_value: float

    @property
    def covers_one(self) -> bool:
        return self.low <= 1.0 <= self.high


def paired_ratio(ratios: Sequence[float], confidence: float = CONFIDENCE) -> PairedRatio:
    """Geometric mean of `ratios` with a Student-t interval on their logs, and the one-sample t test's p.

    Needs at least two pairs for an interval (NaN bounds otherwise).
    """
    from scipy import stats

    values = np.asarray(ratios, dtype=float)
    pairs = tuple(float(x) for x in values)
    if values.size == 0 or (values <= 0).any() or not np.isfinite(values).all():
        raise ValueError("paired ratios must be positive and finite")
    logs = np.log(values)
    centre = float(logs.mean())
    if values.size < 2:
        return PairedRatio(math.exp(centre), math.nan, math.nan, pairs, confidence, math.nan)
    spread = float(logs.std(ddof=1))
    if spread == 0:
        return PairedRatio(math.exp(centre), math.exp(centre), math.exp(centre), pairs, confidence,
                           1.0 if centre == 0 else 0.0)
    half = float(stats.t.ppf((1 + confidence) / 2, values.size - 1)) * spread / math.sqrt(values.size)
    p_value = float(stats.ttest_1samp(logs, 0.0).pvalue)
    return PairedRatio(math.exp(centre), math.exp(centre - half), math.exp(centre + half), pairs,
                       confidence, p_value)

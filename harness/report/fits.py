"""The statistics behind reports and comparisons: log-log slopes, crossovers, Pareto
frontiers, a bootstrap interval of a ratio of medians, and the Mann–Whitney U test.

numpy only (no scipy, no torch), so a report builds wherever pandas does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.units import finite

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def loglog_slope(seq_lens: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) on log(seq_len): 2.0 for a quadratic cost.

    Points with a non-positive or missing value are left out; fewer than two
    distinct lengths give None.
    """
    pairs = [(float(n), float(v)) for n, v in zip(seq_lens, values, strict=True)
             if n and v is not None and np.isfinite(v) and v > 0 and n > 0]
    if len({n for n, _ in pairs}) < 2:
        return None
    x = np.log([n for n, _ in pairs])
    y = np.log([v for _, v in pairs])
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def crossover(seq_lens: Sequence[int], candidate: Sequence[float | None],
              baseline: Sequence[float | None]) -> int | None:
    """The smallest measured length from which `candidate` is below `baseline` at every longer length.

    Sequences are aligned on `seq_lens` (sorted ascending inside). A length
    where the candidate has no value but the baseline has counts against the
    candidate; one where only the baseline is missing (it failed, e.g. oom)
    counts for it; one where both are missing is ignored. None means never.
    """
    order = sorted(range(len(seq_lens)), key=lambda i: seq_lens[i])
    wins: list[tuple[int, bool]] = []
    for i in order:
        cand, base = finite(candidate[i]), finite(baseline[i])
        if cand is None and base is None:
            continue
        wins.append((int(seq_lens[i]), cand is not None and (base is None or cand < base)))
    start = None
    for seq_len, win in reversed(wins):
        if not win:
            break
        start = seq_len
    return start


def pareto_frontier(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the points that no other point beats on both cost and error, by cost ascending."""
    points = sorted(((c, e, i) for i, (c, e) in enumerate(zip(costs, errors, strict=True))
                     if finite(c) is not None and finite(e) is not None), key=lambda p: (p[0], p[1]))
    frontier: list[int] = []
    best_error = math.inf
    for _cost, error, index in points:
        if error < best_error:
            frontier.append(index)
            best_error = error
    return frontier


@dataclass(frozen=True)
class RatioInterval:
    """NEW/BASE ratio of medians and its percentile-bootstrap interval."""

    ratio: float
    low: float
    high: float
    confidence: float


def median_ratio_interval(base: Sequence[float], new: Sequence[float], confidence: float = 0.95,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> RatioInterval:
    """median(new) / median(base) with a percentile bootstrap interval.

    Each sample set is resampled with replacement, independently, `resamples`
    times from a generator seeded with `seed`, so the interval is the same on
    every run of the comparison.
    """
    base_arr = np.asarray(base, dtype=float)
    new_arr = np.asarray(new, dtype=float)
    if base_arr.size == 0 or new_arr.size == 0:
        raise ValueError("a ratio of medians needs samples on both sides")
    ratio = float(np.median(new_arr) / np.median(base_arr))
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(rng, new_arr, resamples) / _bootstrap_medians(rng, base_arr, resamples)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return RatioInterval(ratio=ratio, low=float(low), high=float(high), confidence=confidence)


def _bootstrap_medians(rng: np.random.Generator, values: np.ndarray, resamples: int) -> np.ndarray:
    """Medians of `resamples` resamples with replacement, drawn in chunks of bounded size."""
    chunk = max(1, min(resamples, 2_000_000 // values.size))
    medians = [np.median(rng.choice(values, size=(min(chunk, resamples - start), values.size)), axis=1)
               for start in range(0, resamples, chunk)]
    return np.concatenate(medians)


@dataclass(frozen=True)
class UTest:
    """Two-sided Mann–Whitney U test: U of the first sample, its z score and p value."""

    u: float
    z: float
    p_value: float


def mann_whitney_u(first: Sequence[float], second: Sequence[float]) -> UTest:
    """Two-sided Mann–Whitney U test with the normal approximation, tie correction and
    continuity correction (what scipy.stats.mannwhitneyu gives with method='asymptotic').
    """
    x = np.asarray(first, dtype=float)
    y = np.asarray(second, dtype=float)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("the U test needs samples on both sides")
    ranks = _average_ranks(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    total = n1 + n2
    _, tie_counts = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = float((tie_counts ** 3 - tie_counts).sum()) / (total * (total - 1))
    variance = n1 * n2 / 12 * ((total + 1) - tie_term)
    mean = n1 * n2 / 2
    if variance <= 0:
        return UTest(u=u1, z=0.0, p_value=1.0)
    deviation = abs(u1 - mean) - 0.5
    z = max(deviation, 0.0) / math.sqrt(variance)
    p_value = min(1.0, math.erfc(z / math.sqrt(2)))
    return UTest(u=u1, z=math.copysign(z, u1 - mean), p_value=p_value)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    inverse = np.empty(values.size, dtype=np.intp)
    inverse[order] = np.arange(values.size)
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = starts_group.cumsum()[inverse]                        # 1-based group of each value
    bounds = np.r_[np.nonzero(starts_group)[0], values.size]      # first index of each group, and the end
    return 0.5 * (bounds[group] + bounds[group - 1] + 1)

"""A paired ratio that may be looked at after every pair: an always-valid interval for `ab`.

`ab` adds pairs until the interval of the ratio B/A lies wholly above or
wholly below a gate's limit, or a cap is reached. Looking after every pair
and stopping when the interval decides would, with a fixed-level Student-t
interval, miss the true ratio far more often than 5% of the time. Here the
error is spent across the looks (a union bound): the look after the n-th
pair, counting from the first allowed look n0, uses the two-sided level

    α_n = α / ((n − n0 + 1)(n − n0 + 2)),   Σ_n α_n = α,

so the chance that *any* look's interval misses the true geometric-mean
ratio is at most α (for normally distributed log ratios; the Student-t
interval is itself robust to moderate tails). Each look's interval is the
Student-t interval of the mean log ratio at level 1 − α_n. The coverage is
checked by simulation in tests/test_sequential.py.

numpy and SciPy only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
METHOD = ("paired log ratios; after each pair from the first look on, a Student-t interval at level "
          "1 − α/((n−n0+1)(n−n0+2)), so that over every look together the interval misses the true ratio "
          "with probability at most α = 5% (union bound)")


def look_alpha(pairs: int, first_look: int, alpha: float = ALPHA) -> float:
    """The two-sided level spent at the look after `pairs` pairs (looks start at `first_look` pairs)."""
    if pairs < first_look:
        raise ValueError(f"no look before {first_look} pairs (got {pairs})")
    j = pairs - first_look + 1
    return alpha / (j * (j + 1))


@dataclass(frozen=True)
class SequentialInterval:
    """The geometric-mean ratio after `pairs` pairs and its always-valid interval."""

    ratio: float
    low: float
    high: float
    pairs: int
    level: float

    def above(self, limit: float) -> bool:
        return self.low > limit

    def below(self, limit: float) -> bool:
        return self.high < limit

    def decides(self, limits: Sequence[float]) -> bool:
        """Whether the interval lies wholly above or wholly below every limit."""
        return all(self.above(limit) or self.below(limit) for limit in limits)


def sequential_interval(ratios: Sequence[float], first_look: int, alpha: float = ALPHA) -> SequentialInterval:
    """The interval of the geometric mean of `ratios` at the look after len(ratios) pairs."""
    from scipy import stats

    values = np.log(np.asarray(ratios, dtype=float))
    n = values.size
    if n < max(2, first_look):
        raise ValueError(f"an interval needs at least {max(2, first_look)} pairs, got {n}")
    level = look_alpha(n, first_look, alpha)
    mean = float(values.mean())
    spread = float(values.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(1 - level / 2, n - 1)) * spread
    return SequentialInterval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, level)

"""The fits behind reports: log-log slopes, crossovers and Pareto frontiers.

numpy only (no torch), so a report builds wherever pandas does. The tests
and intervals of comparisons are in `attnbench.report.significance`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from attnbench.core.units import finite


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

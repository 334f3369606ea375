"""What the benchmark scripts share: the median wall time of a callable."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, reps: int, *, warmup: bool = False) -> float:
    """Median seconds of `reps` calls of `fn` (perf_counter_ns), after one untimed call when `warmup`."""
    if warmup:
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e9)
    return statistics.median(samples)

"""What the benchmark scripts share: the median wall time of a callable, and the workers' malloc settings."""

from __future__ import annotations

import os
import statistics
import sys
import time

from attnbench.engine.environment import worker_malloc_environment


def as_in_a_worker() -> None:
    """Run this script again, at once, under the glibc malloc settings the harness's workers use, unless it
    already does: freed blocks stay mapped for reuse instead of being faulted in again on every call (without
    them a forward with tensors of tens of MiB measured 29-32 ms where a worker's settings gave 17.6-18.5 ms)."""
    wanted = worker_malloc_environment()
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **wanted})


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

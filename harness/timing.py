"""Timing one call, done right: warm-up by time, adaptive repetitions, every raw sample kept.

One stopping rule (`AdaptiveStop`) serves both clocks:

- CPU: `perf_counter_ns` around a block of back-to-back calls, sized so a
  sample lasts at least `min_sample_s` (timer overhead stays negligible).
- CUDA: a pair of CUDA events per repetition, one synchronize per batch
  before reading them, the L2 cache flushed (outside the events) before each
  repetition, optionally the call replayed from a CUDA graph.

Setup (prepare, compile, the first call) is timed by the caller and kept apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.settings import MeasureSettings
from harness.stats import summarize


@dataclass(frozen=True)
class TimedSamples:
    samples_s: tuple[float, ...]
    calls_per_sample: int
    warmup_s: float
    warmup_calls: int
    stop_reason: str
    timer: str


class AdaptiveStop:
    """Decides when to stop repeating: interval tight enough, budget spent, or too many samples.

    The interval of the median is re-checked each time the sample count has
    grown by a tenth, so the check stays cheap for thousands of samples.
    """

    def __init__(self, settings: MeasureSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self._next_check = settings.min_reps

    def reason(self, samples: list[float]) -> str | None:
        count = len(samples)
        if count >= self.settings.max_reps:
            return "max_reps"
        if count >= self._next_check:
            self._next_check = max(count + 1, math.ceil(count * 1.1))
            if summarize(samples).rel_half_width <= self.settings.target_rel_ci:
                return "ci"
        if self.clock() - self.started >= self.settings.budget_s and count >= min(3, self.settings.min_reps):
            return "budget"
        return None


def warm_up(call: Callable[[], object], settings: MeasureSettings, sync: Callable[[], None] = lambda: None,
            clock: Callable[[], float] = time.perf_counter) -> tuple[float, int, float]:
    """Call until `warmup_s` has passed (at least once). Returns (seconds, calls, seconds per call)."""
    start = clock()
    calls = 0
    while True:
        call()
        sync()
        calls += 1
        elapsed = clock() - start
        if elapsed >= settings.warmup_s:
            return elapsed, calls, elapsed / calls


def calls_per_sample(per_call_s: float, min_sample_s: float) -> int:
    """How many back-to-back calls make one sample last at least `min_sample_s`."""
    if per_call_s <= 0:
        return 1000
    return max(1, min(1000, math.ceil(min_sample_s / per_call_s)))


def time_cpu(call: Callable[[], object], settings: MeasureSettings) -> TimedSamples:
    """Time `call` on the CPU with perf_counter_ns."""
    warmup_s, warmup_calls, per_call = warm_up(call, settings)
    block = calls_per_sample(per_call, settings.min_sample_s)
    stop = AdaptiveStop(settings)
    samples: list[float] = []
    clock = time.perf_counter_ns
    while True:
        start = clock()
        for _ in range(block):
            call()
        samples.append((clock() - start) / block / 1e9)
        reason = stop.reason(samples)
        if reason:
            return TimedSamples(tuple(samples), block, warmup_s, warmup_calls, reason, "cpu-perf-counter")


def l2_flush_bytes(l2_cache_size: int) -> int:
    """Bytes to overwrite between repetitions: twice the L2 (at least 8 MiB), so nothing of the last call survives."""
    return max(2 * int(l2_cache_size), 8 << 20)


def cuda_batch_size(per_call_s: float, budget_s: float) -> int:
    """Repetitions between synchronizes: about 50 ms of work, between 1 and 100."""
    if per_call_s <= 0:
        return 100
    return max(1, min(100, int(0.05 / per_call_s), int(budget_s / per_call_s) or 1))


def time_cuda(call: Callable[[], object], settings: MeasureSettings, device=None) -> TimedSamples:
    """Time `call` on a CUDA device with events per repetition and an L2 flush between them."""
    import torch

    sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    flush_buffer = None
    if settings.l2_flush:
        props = torch.cuda.get_device_properties(device)
        flush_buffer = torch.empty(l2_flush_bytes(props.L2_cache_size), dtype=torch.int8, device=device)
    timed = call
    timer = "cuda-events"
    warmup_s, warmup_calls, per_call = warm_up(call, settings, sync)
    if settings.cuda_graph:
        timed = _capture_graph(call, device)
        timer = "cuda-events+graph"
    batch = cuda_batch_size(per_call, settings.budget_s)
    stop = AdaptiveStop(settings)
    samples: list[float] = []
    while True:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(batch)]
        for start, end in events:
            if flush_buffer is not None:
                flush_buffer.zero_()
            start.record()
            timed()
            end.record()
        sync()
        samples.extend(start.elapsed_time(end) / 1e3 for start, end in events)
        reason = stop.reason(samples)
        if reason:
            return TimedSamples(tuple(samples), 1, warmup_s, warmup_calls, reason, timer)


def _capture_graph(call: Callable[[], object], device) -> Callable[[], object]:
    """Capture `call` in a CUDA graph (after warm-up on a side stream); the returned callable replays it."""
    import torch

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay

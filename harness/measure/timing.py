"""Timing one call, done right: warm-up by time, adaptive repetitions, every raw sample kept.

One stopping rule (`AdaptiveStop`) serves both clocks:

- CPU: `perf_counter_ns` around a block of back-to-back calls, sized so a
  sample lasts at least `min_sample_s` (timer overhead stays negligible).
- CUDA: a pair of CUDA events per repetition, one synchronize per batch
  before reading them, the L2 cache flushed (outside the events) before each
  repetition, optionally the call replayed from a CUDA graph (the flush stays
  outside the graph, so it is never part of what is replayed or timed).

Setup (prepare, compile, the first call) is timed by the caller and kept apart.
`on_timed_start` / `on_timed_stop` run just before the first and just after
the last timed repetition (after a synchronize on CUDA), outside every sample:
energy counters are read there, so energy per call covers exactly the timed
calls.

Every clock and every CUDA call goes through a parameter (`clock_ns`, a
`CudaBackend`), so the loops' logic (stopping, batch sizes, where the flush
and the synchronize fall) is unit-tested on the CPU with fakes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from attnbench.core.settings import MeasureSettings
from attnbench.measure.stats import min_samples_for_interval, summarize

MAX_CALLS_PER_SAMPLE = 1000
CUDA_BATCH_TARGET_S = 0.05
CUDA_MAX_BATCH = 100
MIN_FLUSH_BYTES = 8 << 20


@dataclass(frozen=True)
class TimedSamples:
    """The raw samples of one timed region and how they were taken.

    cpu_share (CPU loop only): per sample, the process's CPU seconds over
    (wall seconds × threads). run_queue_ns (CPU loop, Linux only): per
    sample, (ns run on a CPU, ns waited on a run queue) summed over the
    process's threads. Both are read around the same block of calls as the
    sample, just outside its perf_counter window; the kernel updates both
    clocks of a running thread only at ticks and switches, so one short
    sample's values are coarse and `attnbench.measure.contention` judges them
    over windows of consecutive samples.
    """

    samples_s: tuple[float, ...]
    calls_per_sample: int
    warmup_s: float
    warmup_calls: int
    stop_reason: str
    timer: str
    timed_wall_s: float = 0.0
    flush_bytes: int = 0
    synchronizes: int = 0
    cpu_share: tuple[float, ...] = ()
    run_queue_ns: tuple[tuple[int, int], ...] = ()

    @property
    def timed_calls(self) -> int:
        """Calls made between `on_timed_start` and `on_timed_stop`."""
        return len(self.samples_s) * self.calls_per_sample


class AdaptiveStop:
    """Decides when to stop repeating: interval tight enough, budget spent, cap reached, or too many samples.

    'ci': at least `min_reps` samples and the 95% interval of the median within
    ±`target_rel_ci` of it. 'budget': `budget_s` has passed since the stop was
    made and there are enough samples for a 95% interval of the median to
    exist (6, `min_samples_for_interval`) and `min_reps`. 'cap': the next
    sample would take the timed repetitions past `cap_s` (judged from the
    mean sample so far) before that many samples were reached; the cell then
    keeps fewer samples and reports no interval. 'max_reps': the sample count
    reached `max_reps`. The interval is re-checked each time the sample
    count has grown by a tenth, so the check stays cheap for thousands of
    samples; `last_rel_half_width` is the last value computed.
    """

    def __init__(self, settings: MeasureSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self._next_check = settings.min_reps
        self.last_rel_half_width = math.inf
        self.needed = max(settings.min_reps, min_samples_for_interval())

    def reason(self, samples: list[float]) -> str | None:
        count = len(samples)
        if count >= self._next_check:
            self._next_check = max(count + 1, math.ceil(count * 1.1))
            self.last_rel_half_width = summarize(samples).rel_half_width
            if self.last_rel_half_width <= self.settings.target_rel_ci:
                return "ci"
        if count >= self.settings.max_reps:
            return "max_reps"
        elapsed = self.clock() - self.started
        if elapsed >= self.settings.budget_s and count >= self.needed:
            return "budget"
        if count and elapsed + elapsed / count > max(self.settings.cap_s, self.settings.budget_s):
            return "cap"
        return None

    def remaining_reps(self, count: int) -> int:
        return max(0, self.settings.max_reps - count)


def warm_up(call: Callable[[], object], settings: MeasureSettings, sync: Callable[[], None] = lambda: None,
            clock: Callable[[], float] = time.perf_counter) -> tuple[float, int, float]:
    """Call until `warmup_s` has passed (at least twice). Returns (seconds, calls, seconds per call).

    Seconds per call is the median of the last (up to five) calls, so a slow
    first call (lazy init, autotuning) does not shrink the sample blocks.
    """
    start = last = clock()
    durations: list[float] = []
    while True:
        call()
        sync()
        now = clock()
        durations.append(now - last)
        last = now
        if now - start >= settings.warmup_s and len(durations) >= 2:
            recent = sorted(durations[-5:])
            return now - start, len(durations), recent[len(recent) // 2]


def calls_per_sample(per_call_s: float, min_sample_s: float) -> int:
    """How many back-to-back calls make one sample last at least `min_sample_s` (1 to 1000)."""
    if per_call_s <= 0:
        return MAX_CALLS_PER_SAMPLE
    return max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_s / per_call_s - 1e-9)))


def time_cpu(call: Callable[[], object], settings: MeasureSettings, *, threads: int = 1,
             clock_ns: Callable[[], int] = time.perf_counter_ns,
             cpu_clock_ns: Callable[[], int] = time.process_time_ns,
             run_queue_ns: Callable[[], dict[str, tuple[int, int]] | None] | None = None,
             on_timed_start: Callable[[], None] | None = None,
             on_timed_stop: Callable[[], None] | None = None) -> TimedSamples:
    """Time `call` on the CPU with perf_counter_ns, in blocks of back-to-back calls.

    Around each block, outside its perf_counter window, the process CPU clock
    (`cpu_clock_ns`) and the threads' run-queue times (`run_queue_ns`, default
    `thread_run_queue_ns`) are read too: `cpu_share` divides by `threads` (the
    caller passes torch's intra-op thread count).
    """
    run_queue_ns = run_queue_ns or thread_run_queue_ns
    seconds = lambda: clock_ns() / 1e9  # noqa: E731
    warmup_s, warmup_calls, per_call = warm_up(call, settings, clock=seconds)
    block = calls_per_sample(per_call, settings.min_sample_s)
    has_run_queue = run_queue_ns() is not None
    if on_timed_start:
        on_timed_start()
    stop = AdaptiveStop(settings, clock=seconds)
    samples: list[float] = []
    shares: list[float] = []
    queue: list[tuple[int, int]] = []
    began = clock_ns()
    while True:
        queue_before = run_queue_ns() if has_run_queue else None
        cpu_before = cpu_clock_ns()
        start = clock_ns()
        for _ in range(block):
            call()
        elapsed_ns = clock_ns() - start
        cpu_ns = cpu_clock_ns() - cpu_before
        if has_run_queue:
            queue.append(run_queue_delta(queue_before, run_queue_ns()))
        samples.append(elapsed_ns / block / 1e9)
        shares.append(cpu_ns / (elapsed_ns * max(1, threads)) if elapsed_ns > 0 else 0.0)
        reason = stop.reason(samples)
        if reason:
            wall = (clock_ns() - began) / 1e9
            if on_timed_stop:
                on_timed_stop()
            return TimedSamples(tuple(samples), block, warmup_s, warmup_calls, reason, "cpu-perf-counter",
                                timed_wall_s=wall, cpu_share=tuple(shares), run_queue_ns=tuple(queue))


def thread_run_queue_ns() -> dict[str, tuple[int, int]] | None:
    """Per thread of this process: (ns run on a CPU, ns spent waiting on a run queue); None where unreadable.

    The first two fields of Linux's /proc/self/task/<tid>/schedstat (about
    15 µs for a handful of threads); None off Linux or without schedstats.
    """
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    times: dict[str, tuple[int, int]] = {}
    for tid in tids:
        try:
            fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
        except OSError:
            continue  # the thread ended
        try:
            fields = os.read(fd, 128).split()
        finally:
            os.close(fd)
        if len(fields) >= 2:
            times[tid] = (int(fields[0]), int(fields[1]))
    return times or None


def run_queue_delta(before: dict[str, tuple[int, int]] | None,
                    after: dict[str, tuple[int, int]] | None) -> tuple[int, int]:
    """(ns run, ns waited on a run queue) between two reads, summed over the threads present at both."""
    if not before or not after:
        return (0, 0)
    ran = waited = 0
    for tid, (run_after, wait_after) in after.items():
        if tid in before:
            ran += run_after - before[tid][0]
            waited += wait_after - before[tid][1]
    return (ran, waited)


def l2_flush_bytes(l2_cache_size: int) -> int:
    """Bytes to overwrite between repetitions: twice the L2 (at least 8 MiB), so nothing of the last call survives."""
    return max(2 * int(l2_cache_size), MIN_FLUSH_BYTES)


def cuda_batch_size(per_call_s: float, budget_s: float, remaining_reps: int | None = None) -> int:
    """Repetitions between synchronizes: about 50 ms of work, at most the budget's worth, 1 to 100.

    Never more than `remaining_reps`, so `max_reps` is not overshot.
    """
    if per_call_s <= 0:
        batch = CUDA_MAX_BATCH
    else:
        batch = max(1, min(CUDA_MAX_BATCH, int(CUDA_BATCH_TARGET_S / per_call_s), int(budget_s / per_call_s) or 1))
    if remaining_reps is not None:
        batch = max(1, min(batch, remaining_reps))
    return batch


class CudaBackend:
    """The few CUDA calls the timing loop makes; a fake stands in for it in CPU tests."""

    def __init__(self, device=None) -> None:
        import torch

        self.torch = torch
        self.device = device

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def l2_cache_size(self) -> int:
        return int(self.torch.cuda.get_device_properties(self.device).L2_cache_size)

    def flush_function(self, nbytes: int) -> Callable[[], None]:
        buffer = self.torch.empty(nbytes, dtype=self.torch.int8, device=self.device)
        return buffer.zero_

    def capture_graph(self, call: Callable[[], object]) -> Callable[[], object]:
        return _capture_graph(call, self.device)


def time_cuda(call: Callable[[], object], settings: MeasureSettings, device=None, *,
              backend: CudaBackend | None = None, clock: Callable[[], float] = time.perf_counter,
              on_timed_start: Callable[[], None] | None = None,
              on_timed_stop: Callable[[], None] | None = None) -> TimedSamples:
    """Time `call` on a CUDA device: events per repetition, one synchronize per batch, L2 flushed between.

    Per repetition the stream sees: flush (outside the events), start event,
    the call (or its graph replay), end event. Events are read only after the
    batch's single synchronize, so the CPU never waits inside a batch and
    the launches of the next repetitions overlap the GPU's work.
    """
    backend = backend or CudaBackend(device)
    flush = None
    flush_bytes = 0
    if settings.l2_flush:
        flush_bytes = l2_flush_bytes(backend.l2_cache_size())
        flush = backend.flush_function(flush_bytes)
    timed = call
    timer = "cuda-events"
    warmup_s, warmup_calls, per_call = warm_up(call, settings, backend.synchronize, clock)
    if settings.cuda_graph:
        timed = backend.capture_graph(call)
        timer = "cuda-events+graph"
        for _ in range(3):
            timed()
        backend.synchronize()
    if flush is not None:
        timer += "+l2-flush"
    backend.synchronize()
    if on_timed_start:
        on_timed_start()
    stop = AdaptiveStop(settings, clock=clock)
    samples: list[float] = []
    synchronizes = 0
    began = clock()
    while True:
        batch = cuda_batch_size(per_call, settings.budget_s, stop.remaining_reps(len(samples)))
        events = [(backend.event(), backend.event()) for _ in range(batch)]
        for start, end in events:
            if flush is not None:
                flush()
            start.record()
            timed()
            end.record()
        backend.synchronize()
        synchronizes += 1
        samples.extend(start.elapsed_time(end) / 1e3 for start, end in events)
        reason = stop.reason(samples)
        if reason:
            wall = clock() - began
            if on_timed_stop:
                on_timed_stop()
            return TimedSamples(tuple(samples), 1, warmup_s, warmup_calls, reason, timer, timed_wall_s=wall,
                                flush_bytes=flush_bytes, synchronizes=synchronizes)


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

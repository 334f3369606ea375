"""The timing loops' logic with fake clocks and a fake CUDA backend; real CUDA checks are marked `cuda`.

No assertion here depends on how fast this machine is: every clock the
loops read is a fake that advances by known amounts.
"""

from __future__ import annotations

import pytest

from attnbench.core.settings import MeasureSettings
from attnbench.measure.timing import (
    CUDA_MAX_BATCH,
    MIN_FLUSH_BYTES,
    AdaptiveStop,
    calls_per_sample,
    cuda_batch_size,
    l2_flush_bytes,
    time_cpu,
    time_cuda,
    warm_up,
)


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self) -> None:
        self.now_ns = 0

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)

    def seconds(self) -> float:
        return self.now_ns / 1e9

    def ns(self) -> int:
        return self.now_ns


# ---------------------------------------------------------------- AdaptiveStop


def test_stop_on_ci_needs_six_identical_samples():
    clock = FakeClock()
    stop = AdaptiveStop(MeasureSettings(min_reps=5, budget_s=10), clock=clock.seconds)
    samples: list[float] = []
    reasons = []
    for _ in range(6):
        samples.append(1e-3)
        reasons.append(stop.reason(samples))
    # Five samples cannot bound the median with 95% confidence (30/32 < 0.95), so no 'ci' stop yet.
    assert reasons == [None] * 5 + ["ci"]


def test_stop_on_budget_when_the_interval_stays_wide():
    clock = FakeClock()
    settings = MeasureSettings(min_reps=5, budget_s=1.0, target_rel_ci=0.02)
    stop = AdaptiveStop(settings, clock=clock.seconds)
    samples: list[float] = []
    reason = None
    while reason is None:
        samples.append(1.0 if len(samples) % 2 else 2.0)  # the median's interval spans 1..2: never tight
        clock.advance(0.1)
        reason = stop.reason(samples)
    assert reason == "budget"
    assert len(samples) == 10
    assert stop.last_rel_half_width > 0.02


def test_stop_on_max_reps():
    clock = FakeClock()
    stop = AdaptiveStop(MeasureSettings(min_reps=2, max_reps=7, budget_s=100), clock=clock.seconds)
    samples = []
    reason = None
    while reason is None:
        samples.append(1.0 if len(samples) % 2 else 3.0)
        reason = stop.reason(samples)
    assert (reason, len(samples)) == ("max_reps", 7)


def test_ci_stop_once_tight_with_noise():
    clock = FakeClock()
    stop = AdaptiveStop(MeasureSettings(min_reps=5, budget_s=100, target_rel_ci=0.02), clock=clock.seconds)
    samples = []
    reason = None
    pattern = [1.00, 1.01, 0.99, 1.005, 0.995]
    while reason is None:
        samples.append(pattern[len(samples) % 5])
        reason = stop.reason(samples)
    assert reason == "ci"
    assert stop.last_rel_half_width <= 0.02


# ---------------------------------------------------------------- CPU loop


def test_warm_up_ignores_a_slow_first_call():
    clock = FakeClock()
    durations = iter([0.5] + [0.01] * 1000)
    elapsed, calls, per_call = warm_up(lambda: clock.advance(next(durations)), MeasureSettings(warmup_s=0.6),
                                       clock=clock.seconds)
    assert per_call == pytest.approx(0.01)
    assert calls == 11 and elapsed == pytest.approx(0.6)


def test_calls_per_sample():
    assert calls_per_sample(1e-4, 1e-3) == 10
    assert calls_per_sample(0.5, 1e-3) == 1
    assert calls_per_sample(1e-9, 1e-3) == 1000
    assert calls_per_sample(0.0, 1e-3) == 1000


def test_time_cpu_samples_are_exact_per_call_times_and_hooks_bracket_the_timed_calls():
    clock = FakeClock()
    log = {"calls": 0, "calls_at_start": None, "calls_at_stop": None}

    def call():
        clock.advance(1e-4)
        log["calls"] += 1

    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=1.0, min_sample_s=1e-3, min_reps=5)
    timed = time_cpu(call, settings, clock_ns=clock.ns,
                     on_timed_start=lambda: log.update(calls_at_start=log["calls"]),
                     on_timed_stop=lambda: log.update(calls_at_stop=log["calls"]))
    assert timed.calls_per_sample == 10
    assert all(sample == pytest.approx(1e-4) for sample in timed.samples_s)
    assert timed.stop_reason == "ci" and len(timed.samples_s) == 6
    assert log["calls_at_stop"] - log["calls_at_start"] == timed.timed_calls == 60
    assert log["calls_at_start"] == timed.warmup_calls == 100
    assert timed.timed_wall_s == pytest.approx(60 * 1e-4)


# ---------------------------------------------------------------- CUDA loop, on the CPU with a fake backend


def test_l2_flush_bytes():
    h100_l2 = 50 * 1024 * 1024
    assert l2_flush_bytes(h100_l2) == 2 * h100_l2
    assert l2_flush_bytes(40 * 1024 * 1024) == 80 * 1024 * 1024  # A100
    assert l2_flush_bytes(0) == MIN_FLUSH_BYTES


def test_cuda_batch_size():
    assert cuda_batch_size(1e-3, 10.0) == 50            # 50 ms of work per synchronize
    assert cuda_batch_size(1e-6, 10.0) == CUDA_MAX_BATCH
    assert cuda_batch_size(0.2, 10.0) == 1
    assert cuda_batch_size(1e-3, 0.01) == 10            # never more than the budget's worth
    assert cuda_batch_size(1e-3, 10.0, remaining_reps=3) == 3
    assert cuda_batch_size(0.0, 10.0) == CUDA_MAX_BATCH


class FakeEvent:
    def __init__(self, backend) -> None:
        self.backend = backend
        self.time_ms = None

    def record(self) -> None:
        self.backend.log.append("start" if self.backend.expect_start else "end")
        self.backend.expect_start = not self.backend.expect_start
        self.time_ms = self.backend.gpu_ms

    def elapsed_time(self, end) -> float:
        assert self.backend.synced_after(self), "an event was read before the batch was synchronized"
        return end.time_ms - self.time_ms


class FakeBackend:
    """Stands in for torch.cuda: logs the order of flushes, events, calls and synchronizes."""

    def __init__(self, l2_bytes: int = 50 << 20) -> None:
        self.log: list[str] = []
        self.l2_bytes = l2_bytes
        self.flush_sizes: list[int] = []
        self.gpu_ms = 0.0
        self.expect_start = True
        self.sync_index = -1
        self.captured = 0

    def synchronize(self) -> None:
        self.log.append("sync")
        self.sync_index = len(self.log)

    def synced_after(self, event) -> bool:
        return self.sync_index >= 0

    def event(self) -> FakeEvent:
        return FakeEvent(self)

    def l2_cache_size(self) -> int:
        return self.l2_bytes

    def flush_function(self, nbytes: int):
        self.flush_sizes.append(nbytes)
        return lambda: self.log.append("flush")

    def capture_graph(self, call):
        self.captured += 1
        self.log.append("capture")

        def replay():
            self.log.append("replay")
            call()

        return replay


def _cuda_call(backend: FakeBackend, clock: FakeClock, gpu_ms: float = 2.0, alternate: float | None = None):
    count = [0]

    def call():
        ms = alternate if alternate is not None and count[0] % 2 else gpu_ms
        count[0] += 1
        backend.log.append("call")
        backend.gpu_ms += ms
        clock.advance(ms / 1e3)
    return call


def test_time_cuda_flushes_outside_the_events_and_synchronizes_once_per_batch():
    backend, clock = FakeBackend(), FakeClock()
    settings = MeasureSettings(warmup_s=0.01, budget_s=0.2, min_reps=5, l2_flush=True)
    marks = []
    timed = time_cuda(_cuda_call(backend, clock), settings, backend=backend, clock=clock.seconds,
                      on_timed_start=lambda: marks.append(len(backend.log)),
                      on_timed_stop=lambda: marks.append(len(backend.log)))
    assert backend.flush_sizes == [l2_flush_bytes(50 << 20)] == [timed.flush_bytes]
    assert timed.samples_s == tuple([2e-3] * len(timed.samples_s))
    assert timed.timer == "cuda-events+l2-flush"
    timed_log = backend.log[marks[0]:marks[1]]
    batches = "".join("S" if op == "sync" else "." for op in timed_log).split("S")[:-1]
    assert len(batches) == timed.synchronizes >= 1
    assert timed_log[-1] == "sync"
    # Per repetition: flush, start, call, end; nothing else between two synchronizes.
    reps = [op for op in timed_log if op != "sync"]
    assert reps == ["flush", "start", "call", "end"] * len(timed.samples_s)
    assert backend.log[marks[0] - 1] == "sync"  # the warm-up's work is finished before the energy reading


def test_time_cuda_batch_is_about_50ms_and_stops_at_max_reps():
    backend, clock = FakeBackend(), FakeClock()
    settings = MeasureSettings(warmup_s=0.01, budget_s=100, min_reps=5, max_reps=120, l2_flush=False)
    marks = []
    timed = time_cuda(_cuda_call(backend, clock, gpu_ms=1.0, alternate=3.0), settings, backend=backend,
                      clock=clock.seconds, on_timed_start=lambda: marks.append(len(backend.log)))
    assert timed.stop_reason == "max_reps" and len(timed.samples_s) == 120
    batches = [chunk.count("c") for chunk in
               "".join("S" if op == "sync" else op[0] for op in backend.log[marks[0]:]).split("S")[:-1]]
    # About 50 ms of work per synchronize at 1-3 ms a call; the last batch is cut to what max_reps leaves.
    assert sum(batches) == 120 and len(batches) == timed.synchronizes
    assert all(16 <= size <= 50 for size in batches[:-1]) and batches[-1] <= batches[0]
    assert "flush" not in backend.log


def test_time_cuda_graph_replays_with_the_flush_outside_the_graph():
    backend, clock = FakeBackend(), FakeClock()
    settings = MeasureSettings(warmup_s=0.01, budget_s=0.1, min_reps=5, cuda_graph=True, l2_flush=True)
    timed = time_cuda(_cuda_call(backend, clock), settings, backend=backend, clock=clock.seconds)
    assert backend.captured == 1 and timed.timer == "cuda-events+graph+l2-flush"
    after_capture = backend.log[backend.log.index("capture"):]
    timed_reps = [op for op in after_capture if op in ("flush", "start", "replay", "end")]
    tail = timed_reps[-4 * len(timed.samples_s):]
    assert tail == ["flush", "start", "replay", "end"] * len(timed.samples_s)


# ---------------------------------------------------------------- end to end, CPU


def test_processes_option_merges_fresh_workers():
    from attnbench.core.case import Case
    from attnbench.engine.local_executor import LocalExecutor

    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.05, processes=2, accuracy=False, memory=False,
                               telemetry=False)
    executor = LocalExecutor(threads=1)
    try:
        [(_, result)] = list(executor.map(iter([Case(variant="naive", seq_len=32, heads=1)]), settings))
    finally:
        executor.close()
    assert result.status == "ok", result.reason
    processes = result.telemetry["processes"]
    assert processes["count"] == 2 and len(set(processes["pids"])) == 2
    assert sum(processes["sample_counts"]) == result.timing.reps


# ---------------------------------------------------------------- on a GPU


@pytest.mark.cuda
def test_cuda_timing_on_a_device():
    import torch

    a = torch.randn(2048, 2048, device="cuda")
    settings = MeasureSettings(warmup_s=0.05, budget_s=0.3, min_reps=10)
    timed = time_cuda(lambda: a @ a, settings)
    props = torch.cuda.get_device_properties(0)
    assert timed.flush_bytes == l2_flush_bytes(props.L2_cache_size)
    assert timed.timer == "cuda-events+l2-flush"
    flops_per_s = 2 * 2048 ** 3 / sorted(timed.samples_s)[len(timed.samples_s) // 2]
    assert 1e11 < flops_per_s < 1e16  # a GPU, not a broken clock
    graphed = time_cuda(lambda: a @ a, MeasureSettings(warmup_s=0.05, budget_s=0.3, min_reps=10, cuda_graph=True))
    assert graphed.timer == "cuda-events+graph+l2-flush"
    assert len(graphed.samples_s) >= 10


@pytest.mark.cuda
def test_cuda_peak_is_exact_for_one_allocation():
    import torch

    from attnbench.measure.memory import cuda_peak_bytes

    nbytes = 64 << 20
    measured = cuda_peak_bytes(lambda: torch.empty(nbytes, dtype=torch.uint8, device="cuda"))
    assert measured.peak_bytes == nbytes and measured.method == "cuda-max-memory-allocated"


@pytest.mark.cuda
def test_l2_flush_really_evicts():
    """A small read-only kernel is slower right after the flush than when its data sits in L2."""
    import torch

    props = torch.cuda.get_device_properties(0)
    small = torch.randn(props.L2_cache_size // 8, device="cuda")  # half the L2, in float32
    hot = time_cuda(small.sum, MeasureSettings(warmup_s=0.05, budget_s=0.3, l2_flush=False))
    cold = time_cuda(small.sum, MeasureSettings(warmup_s=0.05, budget_s=0.3, l2_flush=True))
    median = lambda samples: sorted(samples)[len(samples) // 2]  # noqa: E731
    assert median(cold.samples_s) > median(hot.samples_s)

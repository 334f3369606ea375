"""pytest plugin (entry point ``pytest11``): attention benchmarks inside a team's own pytest suite.

The fixture `attention_benchmark` measures one attnbench cell and records it
as the test's pytest-benchmark result, so ``--benchmark-autosave``,
``--benchmark-compare`` and ``--benchmark-compare-fail`` work as usual::

    def test_longformer_4k(attention_benchmark):
        result = attention_benchmark(variant="longformer", seq_len=4096, heads=8, dtype="bf16",
                                     causal=False, mode="fwd", params={"window": 256})
        assert result.accuracy.output.rel_l2_error < 1e-2

It takes every field of `attnbench.core.case.Case` as a keyword (``variant`` and
``seq_len`` are required; ``batch``, ``heads``, ``head_dim``, ``kv_len``,
``dtype``, ``causal``, ``mode``, ``device``, ``seed``, ``qk_std``, ``params``
default as in a suite) and ``measure={...}`` for `MeasureSettings` keys. It
returns the harness's `Result`. An unsupported case skips the test with the
variant's reasons; an error, crash, timeout or out-of-memory fails it with the
stored reason.

How it measures, and why so: the cell runs in a spawned attnbench worker
process (one per device, shared by the session), through exactly the code
`attnbench run` uses. That gives the harness's timing rules (time-based
warm-up, adaptive repetitions, CUDA events with one synchronize, L2 flush),
keeps setup and compilation out of the samples (reported as ``setup_s``),
keeps torch.compile caches, CUDA context and thread settings out of the pytest
process (and the pytest process's tracing, e.g. coverage, out of the timed
code), and turns a segfault or a hang into a failed test instead of a lost
session. pytest-benchmark's own loop would time asynchronous CUDA launches
without synchronising. The raw samples (seconds per call) become the
benchmark's `stats.data`; pytest-benchmark computes every statistic from them.

pytest-benchmark's options keep their meaning: ``--benchmark-max-time`` is
the time budget of the repetitions, ``--benchmark-min-rounds`` the least
number of samples, ``--benchmark-disable`` runs the cell once (accuracy still
checked) and records nothing, ``--benchmark-skip`` skips. A benchmark with no
``group`` is grouped by its shape, so variants at one shape share a table.

This module is loaded by every pytest run in an environment that has
attnbench installed: it imports neither torch nor pytest-benchmark at import.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest


class _WorkerPool:
    """The session's worker processes, one per device, started on first use."""

    def __init__(self) -> None:
        self._workers: dict[str, Any] = {}

    def get(self, device: str):
        from attnbench.engine.worker import Worker, WorkerOptions

        if device not in self._workers:
            self._workers[device] = Worker(WorkerOptions(device=device))
        return self._workers[device]

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        self._workers.clear()


@pytest.fixture(scope="session")
def attnbench_workers():
    """Spawned attnbench worker processes shared by the session's attention benchmarks."""
    pool = _WorkerPool()
    yield pool
    pool.close()


@pytest.fixture
def attention_benchmark(benchmark, attnbench_workers):
    """Measure one attention case through attnbench and record it as this test's benchmark.

    Call it once per test: ``attention_benchmark(variant=..., seq_len=..., **case_fields,
    measure={...})``; it returns the `attnbench.core.result.Result`.
    """

    def run(*, variant: str, seq_len: int, measure: dict[str, Any] | None = None, **case_fields: Any):
        from attnbench.core.case import Case

        case = Case(variant=variant, seq_len=seq_len, **case_fields)
        settings = _settings(benchmark, measure or {})
        _claim(benchmark)
        result = attnbench_workers.get(case.device).run(case, settings)
        if result.status in ("unsupported", "skipped"):
            benchmark.skipped = True
            pytest.skip(f"{case.label}: {result.reason}")
        if result.status != "ok" or result.timing is None:
            benchmark.has_error = True
            pytest.fail(f"{case.label}: {result.status}: {result.reason or 'no timing'}", pytrace=False)
        if benchmark.enabled:
            _record(benchmark, case, result, settings)
        return result

    return run


def _settings(benchmark, overrides: dict[str, Any]):
    """MeasureSettings from pytest-benchmark's options, then the test's own `measure` keys."""
    from attnbench.core.settings import MeasureSettings

    known = {f.name for f in dataclasses.fields(MeasureSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"measure has no key {', '.join(unknown)} (keys: {', '.join(sorted(known))})")
    base: dict[str, Any] = {}
    max_time = getattr(benchmark, "_max_time", None)
    min_rounds = getattr(benchmark, "_min_rounds", None)
    if max_time:
        base["budget_s"] = float(max_time)
    if min_rounds:
        base["min_reps"] = int(min_rounds)
    if benchmark.disabled:
        # Like pytest-benchmark's --benchmark-disable: run it once, check it, record nothing.
        base.update(warmup_s=0.0, budget_s=0.0, min_reps=1, max_reps=1, memory=False)
        overrides = {k: v for k, v in overrides.items() if k not in base}
    return MeasureSettings(**{**base, **overrides})


def _claim(benchmark) -> None:
    """Mark pytest-benchmark's fixture as used, as benchmark(...) and benchmark.pedantic(...) do."""
    from pytest_benchmark.fixture import FixtureAlreadyUsed

    if benchmark._mode:
        benchmark.has_error = True
        raise FixtureAlreadyUsed(f"Fixture can only be used once. Previously it was used in {benchmark._mode} mode.")
    benchmark._mode = "attention_benchmark(...)"


def _record(benchmark, case, result, settings) -> None:
    """Feed the harness's raw samples (seconds per call) into pytest-benchmark's own stats."""
    from attnbench.store.pytest_benchmark import extra_info, shape_group

    timing = result.timing
    if benchmark.group is None:
        benchmark.group = shape_group(case)
    benchmark.extra_info.update(extra_info(case, result))
    metadata = benchmark._make_stats(timing.calls_per_sample)
    metadata.options = {"timer": f"attnbench:{timing.timer}", "disable_gc": False,
                        "min_rounds": settings.min_reps, "max_time": settings.budget_s,
                        "min_time": settings.min_sample_s, "warmup": settings.warmup_s,
                        "precision": settings.target_rel_ci, "confidence": 0.95}
    for sample in timing.samples_s:
        metadata.stats.update(sample)

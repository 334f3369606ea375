"""The local executor: one spawned worker per device on this machine, cells one at a time.

No cell inherits another's leak: the worker is restarted when its resident
set has grown past a budget after a cell, and whenever the next cell's
variant comes from another plugin distribution than the last one's. Every
restart is kept in `restarts` (why, and the seconds the new worker took to
start), which the sweep stores in run.json.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from attnbench.core.case import Case
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.engine.worker import Worker, WorkerOptions, run_in_fresh_processes

DEFAULT_RSS_BUDGET_FRACTION = 0.25


class LocalExecutor:
    """Runs cells sequentially in isolated worker processes, one worker per device, reused across cells.

    Cells run one at a time even with several devices, so a CPU timing is
    never disturbed by another cell running beside it. `rss_budget_bytes`
    (default: a quarter of this machine's memory) is what a worker may
    hold between cells; `distributions` maps a variant to the plugin
    distribution that provides it (the registry's origins).
    """

    def __init__(self, memory_limit_bytes: int | None = None, threads: int | None = None,
                 calibration: dict[str, Any] | None = None, rss_budget_bytes: int | None = None,
                 distributions: Mapping[str, str] | None = None) -> None:
        self._options = dict(memory_limit_bytes=memory_limit_bytes, threads=threads, calibration=calibration)
        self._workers: dict[str, Worker] = {}
        self._last_distribution: dict[str, str | None] = {}
        self.rss_budget_bytes = rss_budget_bytes if rss_budget_bytes is not None else _default_budget()
        self.distributions = dict(distributions or {})
        self.restarts: list[dict[str, Any]] = []

    def note_distributions(self, distributions: Mapping[str, str]) -> None:
        """Which distribution provides each variant (the sweep passes the registry's origins)."""
        self.distributions = dict(distributions)

    def worker(self, device: str) -> Worker:
        if device not in self._workers:
            self._workers[device] = Worker(WorkerOptions(device=device, **self._options))
        return self._workers[device]

    def available_memory(self, device: str) -> int | None:
        if device == "cpu":
            import psutil

            return psutil.virtual_memory().available
        worker = self.worker(device)
        if not worker.device_info:
            worker.start()
        return worker.device_info.get("memory_available_bytes")

    def map(self, cases: Iterator[Case], settings: MeasureSettings, on_start=None,
            on_progress=None) -> Iterator[tuple[Case, Result]]:
        """Each cell's (case, result); `on_start(case)` before it, `on_progress(case, message)` for its steps."""
        for case in cases:
            if on_start:
                on_start(case)
            if settings.processes > 1:
                yield case, run_in_fresh_processes(WorkerOptions(device=case.device, **self._options), case, settings)
                continue
            self._restart_for_distribution(case)
            worker = self.worker(case.device)
            hear = (lambda message, case=case: on_progress(case, message)) if on_progress else None
            result = worker.run(case, settings, on_progress=hear)
            self._restart_over_budget(case, worker, result)
            yield case, result

    def _restart_for_distribution(self, case: Case) -> None:
        distribution = self.distributions.get(case.variant)
        last = self._last_distribution.get(case.device, distribution)
        self._last_distribution[case.device] = distribution
        worker = self._workers.get(case.device)
        if worker is not None and worker.pid is not None and distribution != last:
            self._restart(worker, f"next variant {case.variant} comes from {distribution or 'an unknown distribution'}, "
                                  f"the last from {last or 'an unknown distribution'}")

    def _restart_over_budget(self, case: Case, worker: Worker, result: Result) -> None:
        """Restart when what the worker holds after the cell (free heap pages released) passes the budget.

        The cell's own figure is used where it has one: the resident set alone
        also counts freed memory the worker keeps for reuse on purpose.
        """
        held = (result.telemetry or {}).get("worker_live_bytes_after")
        if held is None:
            held = worker.resident_bytes()
        if held is not None and held > self.rss_budget_bytes:
            self._restart(worker, f"the worker holds {held / 2**30:.2f} GiB after {case.label}, over the "
                                  f"budget of {self.rss_budget_bytes / 2**30:.2f} GiB")

    def _restart(self, worker: Worker, why: str) -> None:
        worker.stop()
        started = time.perf_counter()
        worker.start()
        self.restarts.append({"reason": why, "start_s": time.perf_counter() - started})

    def restart_summary(self) -> dict[str, Any]:
        return {"count": len(self.restarts), "start_s_total": sum(r["start_s"] for r in self.restarts),
                "rss_budget_bytes": self.rss_budget_bytes, "restarts": self.restarts[-50:]}

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        self._workers.clear()


def _default_budget() -> int:
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_RSS_BUDGET_FRACTION)

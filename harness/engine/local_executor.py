"""The local executor: one spawned worker per device on this machine, cells one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.core.case import Case
from harness.core.result import Result
from harness.core.settings import MeasureSettings
from harness.engine.worker import Worker, WorkerOptions, run_in_fresh_processes


class LocalExecutor:
    """Runs cells sequentially in isolated worker processes, one worker per device, reused across cells.

    Cells run one at a time even with several devices, so a CPU timing is
    never disturbed by another cell running beside it.
    """

    def __init__(self, memory_limit_bytes: int | None = None, threads: int | None = None,
                 calibration: dict[str, Any] | None = None) -> None:
        self._options = dict(memory_limit_bytes=memory_limit_bytes, threads=threads, calibration=calibration)
        self._workers: dict[str, Worker] = {}

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

    def map(self, cases: Iterator[Case], settings: MeasureSettings, on_start=None) -> Iterator[tuple[Case, Result]]:
        for case in cases:
            if on_start:
                on_start(case)
            if settings.processes > 1:
                yield case, run_in_fresh_processes(WorkerOptions(device=case.device, **self._options), case, settings)
            else:
                yield case, self.worker(case.device).run(case, settings)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        self._workers.clear()

"""Worker processes: each cell runs in a spawned process, reused across cells, replaced after a crash.

Spawn, never fork: a CUDA context must not be inherited. The driver talks to
a worker over a pipe: it sends a case and the measurement settings, and gets
a `Result` back, or notices that the worker died (a crash, the kernel's OOM
killer) or hung past the cell's timeout, and turns that into a stored result.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import Any

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.engine.compile_cache import compile_cache_environment
from attnbench.engine.environment import CPU_ALLOCATOR_ENV

STARTUP_TIMEOUT_S = 120.0

@dataclass(frozen=True)
class WorkerOptions:
    """How a worker process is started.

    memory_limit_bytes: cap on the worker's address space (RLIMIT_AS), so a
    runaway variant fails with an out-of-memory error instead of pushing the
    machine into swap. threads: torch's intra-op threads (None: torch's default).
    """

    device: str = "cpu"
    memory_limit_bytes: int | None = None
    threads: int | None = None
    calibration: dict[str, Any] | None = None


def worker_main(connection, options: WorkerOptions) -> None:
    """Entry point of a worker process: measure cases until told to stop (None) or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if options.memory_limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (options.memory_limit_bytes, options.memory_limit_bytes))
    import torch  # after the memory cap, which must cover torch and the variants

    from attnbench.measure.cell import measure_case

    if options.threads:
        torch.set_num_threads(options.threads)
    registry = default_registry()
    connection.send({"type": "hello", "pid": os.getpid(), "device_info": _device_info(options.device)})
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        case = Case.from_dict(message["case"])
        settings = MeasureSettings.from_dict(message["settings"])
        settle_garbage_collector()
        try:
            variant = registry.get(case.variant)
        except Exception as exc:
            result = Result("error", f"variant {case.variant!r} is not available in the worker: {exc}")
        else:
            result = measure_case(case, variant, settings, options.calibration, progress=_progress_sender(connection))
        connection.send({"type": "result", "result": result.to_dict()})


def settle_garbage_collector() -> None:
    """Collect what earlier cells left, then freeze every live object out of the cyclic collector's reach.

    The memory stage and the live-bytes check call `gc.collect()`; in a worker that has imported torch and
    the variants, a full collection walks every one of those objects and took 0.15-0.17 s, four times a
    cell (0.6 s of a 2 s cell, a fifth of the quick suite). Frozen objects are still freed by reference
    counting; only a reference cycle that was alive when its cell began and dies later stays until the
    worker exits.
    """
    gc.collect()
    gc.freeze()


def _progress_sender(connection):
    def send(step: int, steps: int, loss: float) -> None:
        connection.send({"type": "progress", "step": step, "steps": steps, "loss": loss})

    return send


def _device_info(device: str) -> dict[str, Any]:
    import psutil
    import torch

    info: dict[str, Any] = {"device": device, "threads": torch.get_num_threads(),
                            "memory_available_bytes": psutil.virtual_memory().available}
    if device == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        info.update({"memory_available_bytes": free, "memory_total_bytes": total,
                     "name": torch.cuda.get_device_name()})
    return info


class Worker:
    """The driver's handle on one worker process. `run` never raises for what happens in the worker."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self._process = None
        self._connection = None
        self.device_info: dict[str, Any] = {}
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def resident_bytes(self) -> int | None:
        """The worker's resident set now, or None when it is not running."""
        if self._process is None or not self._process.is_alive():
            return None
        import psutil

        try:
            return psutil.Process(self._process.pid).memory_info().rss
        except psutil.Error:
            return None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=worker_main, args=(child, self.options), daemon=True,
                                  name=f"attnbench-worker-{self.options.device}")
        with _environment({**CPU_ALLOCATOR_ENV, **compile_cache_environment()}):
            process.start()
        child.close()
        self._process, self._connection = process, parent
        if not parent.poll(STARTUP_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the {self.options.device} worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
        try:
            hello = parent.recv()
        except EOFError:
            code = process.exitcode
            self.stop()
            raise RuntimeError(f"the {self.options.device} worker exited while starting ({_describe_exit(code)})") from None
        self.device_info = hello.get("device_info", {})

    def run(self, case: Case, settings: MeasureSettings, on_progress=None) -> Result:
        """Run one cell in the worker. A quality cell's progress messages go to `on_progress(message)`,
        and each one restarts its timeout: a training that keeps stepping is never cut off, a silent one is."""
        if self._process is None or not self._process.is_alive():
            self.start()
        worker_info = {"pid": self.pid, "device": self.options.device}
        started = time.perf_counter()
        try:
            self._connection.send({"case": case.to_dict(), "settings": settings.to_dict()})
            while self._connection.poll(settings.timeout_s):
                message = self._connection.recv()
                if message.get("type") == "progress":
                    if on_progress is not None:
                        on_progress(message)
                    continue
                result = Result.from_dict(message["result"])
                return Result.from_dict({**result.to_dict(), "worker": {**result.worker, **worker_info}})
            self._kill()
            return Result("timeout", f"the cell ran longer than its timeout of {settings.timeout_s:g} s; "
                          "the worker was killed and restarted (raise measure.timeout_s to allow more)",
                          worker=worker_info, duration_s=time.perf_counter() - started)
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            code = self._wait_exit()
            status, reason = _classify_death(code)
            return Result(status, reason, worker=worker_info, duration_s=time.perf_counter() - started)

    def _wait_exit(self) -> int | None:
        process = self._process
        process.join(5)
        code = process.exitcode
        self._discard()
        return code

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._discard()

    def _discard(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None
        self.restarts += 1

    def stop(self) -> None:
        """Ask the worker to finish, then make sure it is gone."""
        if self._process is None:
            return
        try:
            self._connection.send(None)
            self._process.join(5)
        except (OSError, BrokenPipeError):
            pass
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._connection.close()
        self._process = self._connection = None


def run_in_fresh_processes(options: WorkerOptions, case: Case, settings: MeasureSettings) -> Result:
    """The whole measurement repeated in `settings.processes` fresh workers, merged with their spread."""
    # scipy (the merge's order statistics) loads only when a run merges processes
    from attnbench.measure.merge import merge_process_results

    results = []
    for _ in range(settings.processes):
        worker = Worker(options)
        try:
            results.append(worker.run(case, settings))
        finally:
            worker.stop()
    return merge_process_results(results)


@contextlib.contextmanager
def _environment(defaults: dict[str, str]):
    """Set the variables of `defaults` that are not set yet, for a child started inside the block."""
    added = [name for name in defaults if name not in os.environ]
    for name in added:
        os.environ[name] = defaults[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _classify_death(code: int | None) -> tuple[str, str]:
    how = _describe_exit(code)
    if code == -signal.SIGKILL:
        return ("oom", f"the worker was {how} while running the cell, most likely by the kernel's "
                       "out-of-memory killer; the worker was restarted")
    return ("crashed", f"the worker process died while running the cell ({how}); the worker was restarted")

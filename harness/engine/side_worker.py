"""A worker for one side of an A/B: a plain subprocess with its own interpreter and environment.

Unlike `attnbench.engine.worker` (multiprocessing spawn, which hands the child
the parent's `sys.path`), this worker is started as ``python -c BOOTSTRAP``
with the side's interpreter, ``PYTHONPATH`` and variables, so it imports the
harness and plugins *that side* has installed: two checkouts, two virtual
environments or two plugin versions. The driver sends one JSON line per
case on stdin and reads one marked JSON line back from stdout; anything
else a variant prints is ignored.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from attnbench.core.case import Case
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.engine.compile_cache import compile_cache_environment
from attnbench.engine.environment import CPU_ALLOCATOR_ENV

MARK = "ATTNBENCH-SIDE-RESULT "
STARTUP_TIMEOUT_S = 120.0

# Only names every harness version since the restructure has, so an older checkout can be a side.
BOOTSTRAP = f"""
import json, sys
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell import measure_case
import attnbench, torch
registry = default_registry()
print({MARK!r} + json.dumps({{"hello": True, "harness": attnbench.__file__, "torch": torch.__version__}}), flush=True)
for line in sys.stdin:
    message = json.loads(line)
    case = Case.from_dict(message["case"])
    try:
        variant = registry.get(case.variant)
    except Exception as exc:
        result = Result("error", f"variant {{case.variant!r}} is not available on this side: {{exc}}")
    else:
        result = measure_case(case, variant, MeasureSettings.from_dict(message["settings"]))
    print({MARK!r} + json.dumps({{"result": result.to_dict()}}, default=str), flush=True)
"""


class SideWorker:
    """One long-lived worker process for one side; `run` never raises for what happens inside it."""

    def __init__(self, label: str, python: str | None = None, pythonpath: tuple[str, ...] = (),
                 env: Mapping[str, str] | None = None, log_path: Path | None = None) -> None:
        self.label = label
        self.python = python or sys.executable
        self.pythonpath = pythonpath
        self.env = dict(env or {})
        self.log_path = log_path
        self.info: dict = {}
        self._process: subprocess.Popen | None = None
        self._log = None

    def environment(self) -> dict[str, str]:
        env = {**CPU_ALLOCATOR_ENV, **compile_cache_environment(), **os.environ, **self.env}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        return env

    def start(self) -> None:
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen([self.python, "-c", BOOTSTRAP], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=self._log, env=self.environment(),
                                             text=True, bufsize=1)
        except OSError as exc:
            raise RuntimeError(f"side {self.label}: cannot start {self.python}: {exc.strerror or exc}") from None
        reply = self._read(STARTUP_TIMEOUT_S)
        if reply is None or not reply.get("hello"):
            code = self._process.poll()
            self.stop()
            where = f"; its stderr is in {self.log_path}" if self.log_path else ""
            raise RuntimeError(f"side {self.label}: the worker ({self.python}) did not start "
                               f"(exit status {code}){where}")
        self.info = reply

    def run(self, case: Case, settings: MeasureSettings) -> Result:
        if self._process is None or self._process.poll() is not None:
            self.start()
        started = time.perf_counter()
        worker = {"pid": self._process.pid, "side": self.label}
        try:
            self._process.stdin.write(json.dumps({"case": case.to_dict(), "settings": settings.to_dict()}) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died(worker, started)
        reply = self._read(settings.timeout_s)
        if reply is None:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait(10)
                self._process = None
                return Result("timeout", f"side {self.label}: the cell ran longer than its timeout of "
                              f"{settings.timeout_s:g} s; the worker was killed", worker=worker,
                              duration_s=time.perf_counter() - started)
            return self._died(worker, started)
        result = Result.from_dict(reply["result"])
        return Result.from_dict({**result.to_dict(), "worker": {**result.worker, **worker}})

    def _died(self, worker: dict, started: float) -> Result:
        code = self._process.wait(10) if self._process else None
        self._process = None
        return Result("crashed", f"side {self.label}: the worker died while running the cell (exit status {code}); "
                      "it is restarted for the next cell", worker=worker, duration_s=time.perf_counter() - started)

    def _read(self, timeout_s: float) -> dict | None:
        """The next marked line as JSON, or None on timeout or end of output."""
        deadline = time.monotonic() + timeout_s
        stream = self._process.stdout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([stream], [], [], left)
            if not ready:
                return None
            line = stream.readline()
            if not line:
                return None
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])

    def stop(self) -> None:
        if self._process is not None:
            try:
                self._process.stdin.close()
                self._process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(5)
            self._process = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

"""Where a run's wall time went, stage by stage (`attnbench run --durations`, like pytest's).

The driver's stages are timed around what it does (`StageClock`): start-up
(the interpreter, imports and the suite, from the process's start), the
calibration, the sweep, the summary and the report. The sweep is split by
what its cells stored (`cell_stages`), summed over the cells:

- compile start-up: `telemetry.compile_warmup_s`, the compile stack's one-off
  start-up a worker pays before its first compiling variant;
- setup: `timing.setup_s` (prepare and the first call; a quality cell's model
  set-up);
- warm-up and timing: `timing.warmup_s` and `telemetry.timed_wall_s`;
- memory and accuracy: `telemetry.memory_s` and `telemetry.accuracy_s` (the
  peak-memory pass; the float64 reference and the error figures);
- training and evaluation: a quality cell's `task.train_s` and `task.eval_s`;
- the rest of a cell: its `duration_s` less the above (derived figures,
  the timing's own bookkeeping, runs stored before these stages were timed);
- worker start and hand-off: the sweep's wall time less every cell's
  `duration_s` (starting and restarting worker processes, their imports,
  sending cases and results), never below zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import psutil

from attnbench.core.result import Result
from attnbench.core.terminal import TextTable

CELL_STAGES = ("compile start-up", "setup", "warm-up", "timing", "memory", "accuracy", "training", "evaluation",
               "rest of cell")


@dataclass(frozen=True)
class Stage:
    """One stage: its name, the seconds spent in it, and the stage it is a part of (None: a top-level stage)."""

    name: str
    seconds: float
    within: str | None = None


def process_age_s() -> float:
    """Seconds since this process started (the interpreter's own start-up included)."""
    return max(0.0, time.time() - psutil.Process().create_time())


def cell_stages(results: Iterable[Result]) -> dict[str, float]:
    """Seconds per in-worker stage (`CELL_STAGES`), summed over `results`; the last is each cell's remainder."""
    sums = dict.fromkeys(CELL_STAGES, 0.0)
    for result in results:
        telemetry = result.telemetry or {}
        parts = {
            "compile start-up": float(telemetry.get("compile_warmup_s") or 0.0),
            "setup": result.timing.setup_s if result.timing else (result.task.setup_s if result.task else 0.0),
            "warm-up": result.timing.warmup_s if result.timing else 0.0,
            "timing": float(telemetry.get("timed_wall_s") or 0.0),
            "memory": float(telemetry.get("memory_s") or 0.0),
            "accuracy": float(telemetry.get("accuracy_s") or 0.0),
            "training": result.task.train_s if result.task else 0.0,
            "evaluation": result.task.eval_s if result.task else 0.0,
        }
        for name, seconds in parts.items():
            sums[name] += seconds
        sums[CELL_STAGES[-1]] += max(0.0, (result.duration_s or 0.0) - sum(parts.values()))
    return sums


@dataclass
class StageClock:
    """The driver's stages, timed one after another: `start`ed at the first, each `mark` closes one."""

    stages: list[Stage] = field(default_factory=list)
    _since: float = 0.0

    def start(self) -> None:
        """Open the first stage, start-up, at the process's start."""
        self._since = time.perf_counter()
        self.stages.append(Stage("start-up (interpreter, imports, suite)", process_age_s()))

    def mark(self, name: str) -> None:
        """Close the stage that began at the last mark (or at `start`) under `name`."""
        now = time.perf_counter()
        self.stages.append(Stage(name, now - self._since))
        self._since = now


def split_sweep(sweep_s: float, results: Iterable[Result]) -> list[Stage]:
    """The sweep's wall time as worker start and hand-off, then the cells' stages that took any time."""
    per_cell = cell_stages(results)
    stages = [Stage("worker start and hand-off", max(0.0, sweep_s - sum(per_cell.values())))]
    return stages + [Stage(name, seconds) for name, seconds in per_cell.items() if seconds > 0]


def durations_table(stages: list[Stage]) -> TextTable:
    """Stages as a table of seconds and shares of the total; a stage's parts are indented under it."""
    total = sum(stage.seconds for stage in stages if stage.within is None)
    rows = [(f"  {stage.name}" if stage.within else stage.name, f"{stage.seconds:.1f}",
             f"{stage.seconds / total:.0%}" if total > 0 else "–") for stage in stages]
    rows.append(("total", f"{total:.1f}", "100%"))
    return TextTable.of("where the time went", ("stage", "seconds", "share"), rows, numeric=("seconds", "share"))


def run_stages(clock: StageClock, sweep_name: str, results: Iterable[Result]) -> list[Stage]:
    """The driver's stages, the sweep's (named `sweep_name` by the clock) followed by its parts."""
    stages = []
    for stage in clock.stages:
        stages.append(stage)
        if stage.name == sweep_name:
            stages += [replace(part, within=sweep_name) for part in split_sweep(stage.seconds, results)]
    return stages

"""Where a run's wall time went, stage by stage, from its run folder alone.

    .venv/bin/python benchmarks/run_stages.py RUN_DIR [--wall SECONDS]

From `run.json`: the run's span (started_at to ended_at), the calibration's
own seconds (0 when it came from the cache) and the worker restarts' start
seconds. From each cell of `cells.jsonl`: setup in its parts (compile,
prepare, first call), warm-up, the timed repetitions' wall time, and the
rest of the cell's duration (memory pass, accuracy, fidelity, telemetry).
What the run's span holds beyond the cells is the driver (spawning the first
worker, planning, storing); with `--wall` (the command's wall time, e.g. from
`time`) the rest outside the span is process start-up, calibration and the
report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import defaultdict
from pathlib import Path


def _seconds_between(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--wall", type=float, help="the command's wall seconds, for the share outside the run")
    args = parser.parse_args()
    run = json.loads((args.run_dir / "run.json").read_text(encoding="utf-8"))
    stages: dict[str, float] = defaultdict(float)
    by_variant: dict[str, float] = defaultdict(float)
    cells = 0
    for line in (args.run_dir / "cells.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        cell = json.loads(line)
        result, cells = cell["result"], cells + 1
        timing, telemetry = result.get("timing") or {}, result.get("telemetry") or {}
        parts = telemetry.get("setup_parts") or {}
        duration = result.get("duration_s") or 0.0
        counted = 0.0
        for name in ("compile_s", "prepare_s", "first_call_s"):
            stages[f"setup: {name[:-2].replace('_', ' ')}"] += parts.get(name, 0.0)
            counted += parts.get(name, 0.0)
        if not parts and timing.get("setup_s"):
            stages["setup (not split)"] += timing["setup_s"]
            counted += timing["setup_s"]
        stages["warm-up"] += timing.get("warmup_s") or 0.0
        stages["timing"] += telemetry.get("timed_wall_s") or 0.0
        counted += (timing.get("warmup_s") or 0.0) + (telemetry.get("timed_wall_s") or 0.0)
        stages["memory, accuracy, rest of the cell"] += max(duration - counted, 0.0)
        by_variant[cell["case"]["variant"]] += duration
    span = _seconds_between(run["started_at"], run["ended_at"]) if run.get("ended_at") else None
    restarts = (run.get("settings") or {}).get("worker_restarts") or {}
    calibration = run.get("calibration") or {}
    calibrated_s = 0.0 if calibration.get("cached") else float(calibration.get("seconds") or 0.0)
    in_cells = sum(stages.values())
    print(f"run {run.get('name')}: {cells} cells, span {span:.1f} s" if span else f"run {run.get('name')}: {cells} cells")
    if args.wall:
        print(f"command wall time {args.wall:.1f} s")
    print(f"  {'calibration (this run)':<36} {calibrated_s:7.1f} s")
    print(f"  {'worker restarts (start-up)':<36} {restarts.get('start_s_total', 0.0):7.1f} s "
          f"({restarts.get('count', 0)} restarts)")
    for name, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {name:<36} {seconds:7.1f} s")
    if span:
        print(f"  {'driver (span minus cells)':<36} {span - in_cells:7.1f} s")
    if args.wall and span:
        print(f"  {'outside the run (start, report)':<36} {args.wall - span:7.1f} s")
    print("cell seconds by variant: " + ", ".join(f"{v} {s:.1f}" for v, s in
                                                  sorted(by_variant.items(), key=lambda item: -item[1])))


if __name__ == "__main__":
    main()

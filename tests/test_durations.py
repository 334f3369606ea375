"""`attnbench run --durations`: where a run's wall time went, stage by stage, read back against what the cells stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_suites import tiny_suite

from attnbench.cli.durations import CELL_STAGES, StageClock, run_stages
from attnbench.core.result import Result, TaskOutcome

SUITE = tiny_suite("stages", ["naive", "sdpa-math"], (32, 64), measure={"warmup_s": 0.05, "budget_s": 0.1})


def table_rows(stdout: str) -> dict[str, float]:
    """The 'where the time went' table's rows: stage (indent kept) -> seconds."""
    lines = stdout[stdout.index("where the time went"):].splitlines()
    rows = {}
    for line in lines[4:]:                                           # title, blank, header, rule
        if not line.startswith("|"):
            break
        stage, seconds, _share = (part for part in line.strip("|").split("|"))
        rows[stage[1:].rstrip()] = float(seconds)
    return rows


def test_a_runs_stages_add_up_to_its_wall_time_and_its_cells_stages_to_what_they_stored(tmp_path, cli_env):
    suite = tmp_path / "stages.toml"
    suite.write_text(SUITE)
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report", "--durations"],
                         capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = table_rows(out.stdout)
    top = {name: s for name, s in rows.items() if not name.startswith(" ") and name != "total"}
    assert list(top) == ["start-up (interpreter, imports, suite)", "planning and calibration", "sweep (the cells)",
                         "summary"]
    assert rows["total"] == pytest.approx(sum(top.values()), abs=0.05 * len(top))
    parts = {name.strip(): s for name, s in rows.items() if name.startswith("  ")}
    assert parts["worker start and hand-off"] > 0                    # a fresh worker process imports torch
    assert sum(parts.values()) == pytest.approx(top["sweep (the cells)"], abs=0.05 * len(parts) + 0.01)

    run_folder = Path(out.stdout.split("run folder: ")[1].split()[0])
    cells = [json.loads(line)["result"] for line in (run_folder / "cells.jsonl").read_text().splitlines()]
    assert len(cells) == 4 and all(c["status"] == "ok" for c in cells)
    stored = {"setup": sum(c["timing"]["setup_s"] for c in cells),
              "warm-up": sum(c["timing"]["warmup_s"] for c in cells),
              "timing": sum(c["telemetry"]["timed_wall_s"] for c in cells),
              "memory": sum(c["telemetry"]["memory_s"] for c in cells),
              "accuracy": sum(c["telemetry"]["accuracy_s"] for c in cells)}
    for stage, seconds in stored.items():
        assert parts[stage] == pytest.approx(seconds, abs=0.051), stage
    assert stored["accuracy"] > 0 and stored["memory"] > 0
    rest = sum(c["duration_s"] for c in cells) - sum(stored.values())
    assert parts.get("rest of cell", 0.0) == pytest.approx(rest, abs=0.051)


def test_a_quality_cells_training_and_evaluation_are_their_own_stages():
    task = TaskOutcome(task="mqar:kv_pairs=2", accuracy=1.0, queries=8, loss_first=2.0, loss_last=0.1, loss_min=0.1,
                       loss_curve=(), steps=10, train_s=3.0, eval_s=0.5, setup_s=0.25, parameters=100, examples=80)
    result = Result(status="ok", task=task, duration_s=4.0)
    clock = StageClock()
    clock.start()
    clock.mark("sweep")
    listed = run_stages(clock, "sweep", [result])
    stages = {stage.name: stage.seconds for stage in listed}
    sweep = stages["sweep"]
    assert stages["training"] == 3.0 and stages["evaluation"] == 0.5 and stages["setup"] == 0.25
    assert stages["rest of cell"] == pytest.approx(0.25)
    assert stages["worker start and hand-off"] == pytest.approx(max(0.0, sweep - 4.0))
    parts = {stage.name for stage in listed if stage.within == "sweep"}
    assert set(CELL_STAGES) >= parts - {"worker start and hand-off"}
    assert [stage.name for stage in listed if stage.within is None] == ["start-up (interpreter, imports, suite)",
                                                                         "sweep"]

"""`attnbench quality` end to end: quality cells beside their kernel cost, through show, export and compare."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from test_cli import attnbench, write
from tiny_suites import all_cells_ok

from attnbench.store import load_run, tidy_frame
from attnbench.store.quality import recall_summary

pytestmark = pytest.mark.e2e  # every test trains or runs through a real `attnbench` subprocess

TASK_SUITE = """
[suite]
name = "tiny-recall"
variants = ["sdpa-math", "linear"]

[defaults]
batch = 16
heads = 2
head_dim = 8
causal = true
mode = "fwd_bwd"

[sweep]
seq_len = [16]

[task]
kind = "mqar"
kv_pairs = 2
vocab = 16
steps = 400
test_examples = 32

[measure]
warmup_s = 0.01
budget_s = 0.05
min_reps = 3
contention_retries = 0
"""


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, calibration_cache):
    import os

    folder = tmp_path_factory.mktemp("quality")
    env = {**os.environ, "ATTNBENCH_RESULTS": str(folder / "results"), "ATTNBENCH_CACHE_DIR": str(calibration_cache),
           "OMP_NUM_THREADS": "2"}
    suite = write(folder, "recall.toml", TASK_SUITE)
    out = attnbench("quality", str(suite), "--steps", "40", "--seeds", "2", "--no-report", "--name", "base",
                    env=env, check=0)
    return folder, env, out


def test_quality_stores_each_seed_and_the_cost_of_each_shape(quality_run):
    folder, env, out = quality_run
    loaded = load_run(next((folder / "results").iterdir()))
    quality = [c for c in loaded.cells if c.case.get("task", "none") != "none"]
    costs = [c for c in loaded.cells if c.case.get("task", "none") == "none"]
    assert len(quality) == 4 and len(costs) == 2                     # 2 variants × 2 seeds, 1 cost cell each
    assert {c.case["seed"] for c in quality} == {0, 1} and all(c.case["seed"] == 0 for c in costs)
    assert all(c.result.status == "ok" and c.result.task.steps == 40 and "steps=40" in c.case["task"]
               for c in quality)
    assert all(c.result.status == "ok" and c.result.timing is not None and c.result.task is None for c in costs)
    assert all(0.0 <= c.result.task.accuracy <= 1.0 and c.result.task.queries == 32 * 2 for c in quality)
    assert "recall" in out.stdout and "(2 seeds)" in out.stdout and all_cells_ok(out.stdout, 6), out.stdout
    summary = recall_summary(tidy_frame([loaded]))
    assert len(summary) == 2 and (summary.seeds == 2).all() and summary.time_median_s.notna().all()
    linear = summary[summary.variant == "linear"].iloc[0]
    assert linear.state_size == 2 * 8 * (8 + 1)                       # heads·d·(d_v + 1)


def test_show_and_export_carry_the_task_columns(quality_run, tmp_path):
    folder, env, _ = quality_run
    show = attnbench("show", "base", env=env, check=0)
    assert "recall:" in show.stdout and "sdpa-math" in show.stdout and "N=16" in show.stdout
    for fmt in ("csv", "parquet", "json"):
        target = tmp_path / f"cells.{fmt}"
        attnbench("export", "base", "--format", fmt, "-o", str(target), env=env, check=0)
        frame = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](target)
        trained = frame[frame.task_kind == "mqar"]
        assert len(trained) == 4 and trained.task_accuracy.between(0, 1).all() and (trained.task_steps == 40).all()
        assert trained.time_median_s.isna().all()
        assert frame[frame.task_kind == "none"].task_accuracy.isna().all()
    bench = tmp_path / "bench.json"
    attnbench("export", "base", "--format", "pytest-benchmark", "-o", str(bench), env=env, check=0)
    assert len(json.loads(bench.read_text())["benchmarks"]) == 2      # timed cells only


def test_compare_reports_recall_changes_and_gates_on_them(quality_run, tmp_path):
    folder, env, _ = quality_run
    source = next((folder / "results").iterdir())
    same = attnbench("compare", "base", "base", "--fail-on", "recall:5%", env=env, check=0)
    assert "task recall" in same.stdout and "recall same: 2" in same.stdout
    doctored = folder / "results" / (source.name + "-doctored")
    shutil.copytree(source, doctored)
    run = json.loads((doctored / "run.json").read_text())
    (doctored / "run.json").write_text(json.dumps({**run, "run_id": run["run_id"] + "-x", "name": "worse"}))
    lines = []
    for line in (doctored / "cells.jsonl").read_text().splitlines():
        cell = json.loads(line)
        if cell["case"]["variant"] == "linear" and cell["result"].get("task"):
            cell["result"]["task"]["accuracy"] = 0.0
        lines.append(json.dumps(cell))
    (doctored / "cells.jsonl").write_text("\n".join(lines) + "\n")
    base_recall = recall_summary(tidy_frame([load_run(source)])).set_index("variant").recall["linear"]
    assert base_recall > 0.1          # at least chance (1 of the 8 values) after 40 steps, so a drop to 0 is one
    page = tmp_path / "compare.html"
    out = attnbench("compare", "base", "worse", "--fail-on", "recall:5%", "-o", str(page), env=env)
    html = page.read_text()
    assert 'id="recall"' in html and html.count("<td>mqar</td>") == 2 and ">lower<" in html.replace(" <span", "<")
    assert out.returncode == 1 and "recall dropped" in out.stderr and "linear" in out.stderr, out.stdout + out.stderr
    assert "recall lower: 1" in out.stdout and "recall same: 1" in out.stdout


def test_quality_refuses_a_suite_without_a_task_and_run_options_it_cannot_apply(tmp_path, cli_env):
    out = attnbench("quality", "quick", env=cli_env, check=2)
    assert "has no [task] table" in out.stderr and "attnbench run quick" in out.stderr
    bad = write(tmp_path, "bad.toml", TASK_SUITE.replace('kind = "mqar"', 'kind = "mqar"\ndepth = 3'))
    out = attnbench("quality", str(bad), env=cli_env, check=2)
    assert "unknown key 'task.depth'" in out.stderr and str(bad) in out.stderr

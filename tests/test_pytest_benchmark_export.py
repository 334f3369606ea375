"""Export two real runs as pytest-benchmark JSON and read them back with pytest-benchmark's own `compare`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_suites import tiny_suite

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.engine.sweep import run_suite
from attnbench.plan.suite import parse_suite
from attnbench.store import load_run

pytestmark = pytest.mark.e2e

SUITE = tiny_suite("tiny-export", ["naive", "sdpa-math", "flash-attn"])  # flash-attn cannot run on the CPU: not exported
STATS_FIELDS = {"min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "iqr_outliers",
                "stddev_outliers", "outliers", "ld15iqr", "hd15iqr", "ops", "total", "data", "iterations"}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two runs of the same tiny suite, each exported by `attnbench export --format pytest-benchmark`."""
    root = tmp_path_factory.mktemp("export")
    files = []
    runs = []
    for name in ("base", "new"):
        outcome = run_suite(parse_suite(SUITE), default_registry(), root / "results", name=name,
                            environment={"hostname": "test-host", "platform": "Linux-6.1-x86_64-with-glibc2.36",
                                         "python": "3.11.7", "cpu_model": "Test CPU", "cpu_count_logical": 2,
                                         "harness_commit": "0123abcd-dirty"})
        output = root / f"{name}.json"
        done = subprocess.run([str(BIN / "attnbench"), "export", str(outcome.run_path), "--format", "pytest-benchmark",
                               "-o", str(output)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        files.append(output)
        runs.append(load_run(outcome.run_path))
    return files, runs


def test_only_ok_timed_cells_become_benchmarks_with_every_stat(exported):
    files, runs = exported
    data = json.loads(files[0].read_text())
    assert {"machine_info", "commit_info", "datetime", "version", "benchmarks"} <= set(data)
    assert data["machine_info"]["node"] == "test-host"
    assert data["machine_info"]["machine"] == "x86_64"
    assert data["commit_info"] == {"id": "0123abcd", "dirty": True, "project": "attnbench", "branch": None,
                                   "time": None}
    assert data["datetime"] == runs[0].run.started_at

    ok = {cell.case_id: cell for cell in runs[0].cells if cell.result.status == "ok"}
    assert len(runs[0].cells) == 6 and len(ok) == 4       # the two flash-attn cells are unsupported here
    benchmarks = data["benchmarks"]
    assert sorted(b["extra_info"]["case_id"] for b in benchmarks) == sorted(ok)
    for bench in benchmarks:
        cell = ok[bench["extra_info"]["case_id"]]
        case = Case.from_dict(cell.case)
        timing = cell.result.timing
        stats = bench["stats"]
        assert set(stats) == STATS_FIELDS
        assert stats["data"] == list(timing.samples_s)
        assert stats["rounds"] == timing.reps
        assert stats["iterations"] == timing.calls_per_sample
        assert stats["median"] == pytest.approx(statistics.median(timing.samples_s), rel=1e-12)
        assert stats["min"] == min(timing.samples_s)
        assert stats["total"] == pytest.approx(sum(timing.samples_s))
        assert bench["name"] == case.label
        assert bench["fullname"] == f"attnbench::tiny-export::{case.label}"
        assert bench["group"] == f"attention cpu float32 full fwd B1H2N{case.seq_len}d32"
        assert bench["params"]["variant"] == case.variant and bench["params"]["seq_len"] == case.seq_len
        assert bench["extra_info"]["flops"] == 4 * 2 * case.seq_len * case.seq_len * 32
        assert bench["extra_info"]["rel_l2_error"] == cell.result.accuracy.output.rel_l2_error
        assert bench["extra_info"]["peak_bytes_fwd"] == cell.result.memory.peak_bytes_fwd
        assert bench["extra_info"]["bytes_moved"] == case.bytes_moved


def test_pytest_benchmark_compare_reads_both_exports(exported):
    files, runs = exported
    env = {"COLUMNS": "300", "PATH": str(BIN)}
    table = subprocess.run([str(BIN / "pytest-benchmark"), "compare", *map(str, files)], capture_output=True,
                           text=True, timeout=120, env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    labels = {Case.from_dict(cell.case).label for cell in runs[0].cells if cell.result.status == "ok"}
    for label in labels:
        rows = [line for line in lines if line.startswith(label + " (")]
        assert len(rows) == 2, f"{label} should appear once per file:\n{table.stdout}"
        sources = {row.split("(", 1)[1].split(")", 1)[0] for row in rows}       # pytest-benchmark's short names
        assert {source.rsplit("/", 1)[-1] for source in sources} == {"base", "new"}
    for seq_len in (64, 128):
        assert f"benchmark 'attention cpu float32 full fwd B1H2N{seq_len}d32': 4 tests" in table.stdout
    assert "flash-attn" not in table.stdout

    between = subprocess.run([str(BIN / "pytest-benchmark"), "compare", "--between", "median", *map(str, files)],
                             capture_output=True, text=True, timeout=120, env=env)
    assert between.returncode == 0, between.stderr
    assert between.stdout.count("2 tests, 2 sources") == 2
    for label in labels:
        (row,) = [line for line in between.stdout.splitlines() if line.startswith(label + " ")]
        assert row.rstrip().endswith("%")                        # a Δ between the two runs of the same cell

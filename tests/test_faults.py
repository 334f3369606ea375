"""The fault matrix: each fault caused for real; every finished cell is stored exactly once, with its reason.

Scenarios here (beyond test_sweep.py's segfault, hang, MemoryError, NaN,
wrong shape and non-determinism, and test_cli.py's SIGKILL and Ctrl-C of the
driver): an abort, a variant that allocates until its capped worker runs out
of memory, a full disk while appending a cell, and a second driver on the
same run folder.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench.engine.local_executor import LocalExecutor
from attnbench.engine.sweep import run_suite
from attnbench.plan.suite import parse_suite
from attnbench.store import load_run

FAST = "[measure]\nwarmup_s = 0.01\nbudget_s = 0.05\nmin_reps = 3\ntimeout_s = 60\ncontention_retries = 0\n"


def suite_text(variants, lengths=(32,)):
    names = ", ".join(f'"{v}"' for v in variants)
    return (f'[suite]\nname = "faults"\nvariants = [{names}]\n[defaults]\nheads = 2\nhead_dim = 16\n'
            f"[sweep]\nseq_len = {list(lengths)}\n" + FAST)


def assert_exactly_once(run_path: Path, planned: int) -> None:
    loaded = load_run(run_path)
    ids = [cell.case_id for cell in loaded.cells]
    assert len(ids) == planned, f"{planned - len(ids)} cells lost"
    assert len(set(ids)) == planned, "a cell is stored twice"


@pytest.mark.e2e
def test_abort_and_allocation_runaway_in_a_capped_worker(faulty_registry, results_dir):
    suite = parse_suite(suite_text(["fault-abort", "fault-allocate", "fault-good"], lengths=(32, 64)), "f.toml")
    executor = LocalExecutor(memory_limit_bytes=6 * 2**30)
    outcome = run_suite(suite, faulty_registry, results_dir, executor=executor)
    executor.close()
    results = {(c.case["variant"], c.case["seq_len"]): c.result for c in load_run(outcome.run_path).cells}
    aborted = results[("fault-abort", 32)]
    assert aborted.status == "crashed" and "SIGABRT" in aborted.reason
    runaway = results[("fault-allocate", 32)]
    assert runaway.status == "oom", runaway.reason
    assert "allocate" in runaway.reason.lower() or "memory" in runaway.reason.lower()
    assert results[("fault-allocate", 64)].status == "skipped"
    assert results[("fault-good", 32)].status == results[("fault-good", 64)].status == "ok"
    assert_exactly_once(outcome.run_path, 6)


DISK_SUITE = suite_text(["naive"], lengths=(16, 24, 32, 40, 48, 56, 64, 72))


def _driver_with_file_size_limit(suite: Path, results: Path, limit: int, env):
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--results", str(results),
                           "--no-report", "--name", "disk"], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size, env=env)


@pytest.mark.e2e
def test_full_disk_while_appending_stops_with_a_clear_message_and_resumes(tmp_path, cli_env):
    suite = tmp_path / "disk.toml"
    suite.write_text(DISK_SUITE)
    results = tmp_path / "results"
    out = _driver_with_file_size_limit(suite, results, limit=12_000, env=cli_env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "cannot append cell" in out.stderr and "File too large" in out.stderr
    assert "attnbench run --resume" in out.stderr and "Traceback" not in out.stderr
    run_path = next(results.iterdir())
    loaded = load_run(run_path)
    assert 0 < len(loaded.cells) < 8
    assert loaded.run.status == "interrupted"
    assert all(cell.result.status == "ok" for cell in loaded.cells)
    resumed = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", "--resume", str(run_path), "--no-report"],
                             capture_output=True, text=True, timeout=300, env=cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(run_path, 8)
    assert load_run(run_path).run.status == "finished"


@pytest.mark.e2e
def test_a_second_driver_on_the_same_run_folder_is_refused(tmp_path, cli_env):
    suite = tmp_path / "slow.toml"
    suite.write_text(suite_text(["naive"], lengths=(16, 32, 48, 64, 80, 96)).replace("budget_s = 0.05", "budget_s = 1.0")
                     .replace("min_reps = 3", "min_reps = 500"))
    first = subprocess.Popen([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report", "--name", "busy"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    results = Path(cli_env["ATTNBENCH_RESULTS"])
    deadline = time.time() + 120
    while time.time() < deadline and not list(results.glob("*/cells.jsonl")):
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", "--resume", "busy", "--no-report"],
                            capture_output=True, text=True, env=cli_env, timeout=120)
    assert second.returncode == 2
    assert "is in use by another attnbench driver" in second.stderr and str(first.pid) in second.stderr
    first.wait(300)
    assert first.returncode == 0
    assert_exactly_once(next(results.iterdir()), 6)


@pytest.mark.parametrize("damage", ["truncated-run-json", "empty-cells", "no-cells-file", "foreign-lines"])
def test_damaged_run_folders_load_what_they_can_and_say_what_was_skipped(tmp_path, damage):
    from attnbench.core.errors import StoreError
    from attnbench.core.result import Result, Run
    from attnbench.store import Cell, RunWriter, now_iso

    writer = RunWriter.create(tmp_path, Run(run_id="r", name="r", suite_name="s", suite_text="x",
                                            started_at=now_iso()))
    writer.append(Cell(case_id="a", case={"variant": "naive", "seq_len": 8}, result=Result("ok")))
    writer.close("finished")
    run_json, cells = writer.path / "run.json", writer.path / "cells.jsonl"
    if damage == "truncated-run-json":
        run_json.write_text(run_json.read_text()[:30])
        with pytest.raises(StoreError, match="cannot be read as JSON"):
            load_run(writer.path)
        return
    if damage == "empty-cells":
        cells.write_text("")
        assert load_run(writer.path).cells == () and load_run(writer.path).problems == ()
    elif damage == "no-cells-file":
        cells.unlink()
        loaded = load_run(writer.path)
        assert loaded.cells == () and "is missing" in loaded.problems[0]
    else:
        with open(cells, "a") as handle:
            handle.write(json.dumps({"something": "else"}) + "\n" + json.dumps([1, 2]) + "\n")
        loaded = load_run(writer.path)
        assert [c.case_id for c in loaded.cells] == ["a"]
        assert len(loaded.problems) == 2 and all("corrupted line" in p for p in loaded.problems)
    assert os.path.exists(run_json)

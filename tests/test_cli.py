"""The command line, end to end in subprocesses: bad input exits 2 with a message; kill and resume lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_suites import all_cells_ok

from attnbench.store import load_run

ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]
TINY = """
[suite]
name = "tiny"
variants = ["naive", "sdpa-math"]
[defaults]
heads = 2
head_dim = 16
[sweep]
seq_len = [32, 64]
[measure]
warmup_s = 0.01
budget_s = 0.05
min_reps = 3
contention_retries = 0
"""

SLOW = """
[suite]
name = "slow"
variants = ["naive"]
[defaults]
heads = 2
head_dim = 16
[sweep]
seq_len = [16, 32, 48, 64, 80, 96, 112, 128]
[measure]
warmup_s = 0.3
budget_s = 0.6
min_reps = 200
contention_retries = 0
"""


def attnbench(*args, env, timeout=300, check=None):
    out = subprocess.run([*ATTNBENCH, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check is not None:
        assert out.returncode == check, out.stdout + out.stderr
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.e2e
def test_run_show_export_round_trip(tmp_path, cli_env):
    suite = write(tmp_path, "tiny.toml", TINY)
    out = attnbench("run", str(suite), "--no-report", "--name", "first", env=cli_env, check=0)
    assert "run folder:" in out.stdout and all_cells_ok(out.stdout, 4), out.stdout
    runs = attnbench("runs", env=cli_env, check=0)
    assert "first" in runs.stdout
    show = attnbench("show", "latest", env=cli_env, check=0)
    assert "naive" in show.stdout and "N=64" in show.stdout
    for fmt in ("csv", "parquet", "json"):
        target = tmp_path / f"out.{fmt}"
        attnbench("export", "first", "--format", fmt, "-o", str(target), env=cli_env, check=0)
        frame = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](target)
        assert len(frame) == 4 and set(frame.variant) == {"naive", "sdpa-math"}
        assert (frame.time_median_s > 0).all() and (frame.status == "ok").all()
        assert (frame.rel_l2_error < 1e-5).all()


def test_list_json_reports_every_variant(cli_env):
    listing = json.loads(attnbench("list", "--json", env=cli_env, check=0).stdout)
    by_name = {row["name"]: row for row in listing["variants"]}
    assert by_name["naive"]["available"]["cpu"]
    assert not by_name["sdpa-efficient"]["available"]["cpu"]
    assert by_name["sdpa-efficient"]["reasons"]["cpu"]


BAD_INPUT = [
    (["run", "quick", "--variant", "naiv"], "unknown variant 'naiv' (did you mean: naive"),
    (["run", "quick", "--seq-len", "0"], "--seq-len must be positive"),
    (["run", "quik"], "no built-in suite 'quik'"),
    (["run", "{tmp}/missing.toml"], "does not exist"),
    (["run", "{tmp}/bad-key.toml"], "unknown key 'sweep.seqlen'"),
    (["run", "{tmp}/bad-type.toml"], "key 'defaults.heads' must be an integer"),
    (["run", "{tmp}/bad-dtype.toml"], "unknown dtype 'float8'"),
    (["run", "--resume", "no-such-run"], "no run 'no-such-run'"),
    (["show", "{tmp}"], "is not an attnbench run folder"),
    (["show", "{tmp}/foreign"], "is not an attnbench run"),
    (["run"], "give a SUITE to run"),
]


def _write_bad_inputs(tmp_path: Path) -> None:
    write(tmp_path, "bad-key.toml", "[suite]\nvariants=['naive']\n[sweep]\nseqlen=[64]\nseq_len=[64]\n")
    write(tmp_path, "bad-type.toml", "[suite]\nvariants=['naive']\n[defaults]\nheads='eight'\n[sweep]\nseq_len=[64]\n")
    write(tmp_path, "bad-dtype.toml", "[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\ndtype=['float8']\n")
    (tmp_path / "foreign").mkdir()
    write(tmp_path, "foreign/run.json", '{"not": "a run"}')


@pytest.mark.parametrize("args,needle", BAD_INPUT)
def test_bad_input_exits_2_with_a_message_and_runs_nothing(tmp_path, cli_env, monkeypatch, args, needle):
    """In-process through click's runner (the console script's own exit 2 is the subprocess test below)."""
    from click.testing import CliRunner

    from attnbench.cli import main

    _write_bad_inputs(tmp_path)
    for key in ("ATTNBENCH_RESULTS", "ATTNBENCH_CACHE_DIR"):
        monkeypatch.setenv(key, cli_env[key])
    out = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert out.exit_code == 2, out.output
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and isinstance(out.exception, SystemExit), out.exception
    results = Path(cli_env["ATTNBENCH_RESULTS"])
    assert not results.exists() or not any(results.iterdir())


def test_the_console_script_exits_2_on_bad_input_without_a_traceback(tmp_path, cli_env):
    _write_bad_inputs(tmp_path)
    out = attnbench("run", str(tmp_path / "bad-key.toml"), env=cli_env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "attnbench: error:" in out.stderr and "unknown key 'sweep.seqlen'" in out.stderr
    assert "Traceback" not in out.stderr
    results = Path(cli_env["ATTNBENCH_RESULTS"])
    assert not results.exists() or not any(results.iterdir())


def test_device_cuda_without_cuda_exits_2(cli_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = attnbench("run", "quick", "--device", "cuda", env=cli_env)
    assert out.returncode == 2 and "--device cuda was asked for, but torch sees no CUDA device" in out.stderr


def interruptible() -> None:
    """Ctrl-C acts in the child even when this test runs as a background job (which inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_cells(suite: Path, env, count: int):
    process = subprocess.Popen([*ATTNBENCH, "run", str(suite), "--no-report", "--name", "victim"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=interruptible)
    results = Path(env["ATTNBENCH_RESULTS"])
    deadline = time.time() + 120
    while time.time() < deadline:
        cells = list(results.glob("*/cells.jsonl"))
        if cells and len(cells[0].read_text().splitlines()) >= count:
            return process, cells[0].parent
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run never stored its first cells")


def _assert_every_cell_once(run_path: Path, planned: int):
    loaded = load_run(run_path)
    ids = [c.case_id for c in loaded.cells]
    assert len(ids) == planned and len(set(ids)) == planned and not loaded.problems
    assert all(c.result.status == "ok" for c in loaded.cells)


@pytest.mark.e2e
def test_kill_the_driver_then_resume_gives_every_cell_exactly_once(tmp_path, cli_env):
    suite = write(tmp_path, "slow.toml", SLOW)
    process, run_path = _start_and_wait_for_cells(suite, cli_env, 2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    stored = len(load_run(run_path).cells)
    assert 2 <= stored < 8 and load_run(run_path).status == "interrupted"
    out = attnbench("run", "--resume", "victim", "--no-report", env=cli_env, check=0)
    assert f"{8 - stored} cells to run, {stored} already stored" in out.stderr
    _assert_every_cell_once(run_path, 8)
    assert load_run(run_path).status == "finished"


@pytest.mark.e2e
def test_ctrl_c_stops_cleanly_marks_interrupted_and_says_how_to_resume(tmp_path, cli_env):
    suite = write(tmp_path, "slow.toml", SLOW)
    process, run_path = _start_and_wait_for_cells(suite, cli_env, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "run interrupted" in stderr and f"attnbench run --resume {run_path}" in stderr
    loaded = load_run(run_path)
    assert loaded.run.status == "interrupted" and loaded.run.ended_at
    attnbench("run", "--resume", str(run_path), "--no-report", env=cli_env, check=0)
    _assert_every_cell_once(run_path, 8)


def test_console_script_is_installed():
    assert shutil.which("attnbench", path=os.path.dirname(sys.executable)) is not None

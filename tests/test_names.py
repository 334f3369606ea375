"""Names are not paths: hostile run names stay inside reports/ and results/, bad folders fail before calibrating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.core.errors import AttnbenchError
from attnbench.core.names import MAX_STEM, ensure_writable_dir, safe_file_stem
from attnbench.store import new_run_id

ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]
REPO = Path(__file__).resolve().parents[1]
TINY = """
[suite]
name = "tiny"
variants = ["naive"]
[defaults]
heads = 1
head_dim = 16
[sweep]
seq_len = [32]
[measure]
warmup_s = 0.01
budget_s = 0.02
min_reps = 3
contention_retries = 0
"""
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


def _check_stem(stem: str) -> None:
    assert stem and len(stem) <= MAX_STEM
    assert set(stem) <= SAFE, stem
    assert "/" not in stem and "\\" not in stem and ".." not in stem
    assert not stem.startswith((".", "-"))


@pytest.mark.parametrize("name,expected", [
    ("../x", "x"),
    ("a/b", "a-b"),
    ("a\\b", "a-b"),
    ("..", "run"),
    (".hidden", "hidden"),
    ('"><script>alert(1)</script>', "script-alert-1-script"),
    ("a\x1b[31mb", "a-31mb"),
    ("héllo wörld", "hello-world"),
    ("日本語", "run"),
    ("", "run"),
])
def test_safe_file_stem_rewrites_hostile_names(name, expected):
    stem, note = safe_file_stem(name)
    assert stem == expected
    _check_stem(stem)
    assert note is not None and repr(stem) in note
    assert "\x1b" not in note  # the original is shown escaped


def test_safe_file_stem_caps_long_names_and_leaves_safe_names_alone():
    stem, note = safe_file_stem("x" * 500)
    assert stem == "x" * MAX_STEM and note is not None and len(note) < 300
    _check_stem(stem)
    assert safe_file_stem("quick-2024_01.v2") == ("quick-2024_01.v2", None)
    assert safe_file_stem("", fallback="report") == ("report", "name '' is written as file name 'report'")


@pytest.mark.parametrize("name", ["../x", "a/b/c", '"><script>', "..", "", "a\x00b"])
def test_run_ids_use_the_shared_sanitiser(name):
    run_id = new_run_id(name)
    assert "/" not in run_id and "\\" not in run_id and ".." not in run_id
    assert set(run_id) <= SAFE and not run_id.startswith(".")


def test_ensure_writable_dir(tmp_path):
    assert ensure_writable_dir(tmp_path / "new" / "deep", "results folder", "fix it").is_dir()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(AttnbenchError, match="is a file"):
        ensure_writable_dir(afile, "results folder", "fix it")
    with pytest.raises(AttnbenchError, match="cannot create results folder"):
        ensure_writable_dir(afile / "under", "results folder", "fix it")
    assert afile.read_text() == "x"


def _attnbench(cwd: Path, env: dict, *args: str, timeout: int = 300):
    env = dict(env)
    env.pop("ATTNBENCH_RESULTS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([*ATTNBENCH, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.e2e
@pytest.mark.parametrize("name,stem", [
    ("../x", "x"),
    ("a/b/c", "a-b-c"),
    ('"><script>', "script"),
])
def test_hostile_run_name_writes_only_inside_reports_and_results(tmp_path, cli_env, name, stem):
    work = tmp_path / "work"
    work.mkdir()
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    outside_before = {p for p in tmp_path.iterdir()}
    out = _attnbench(work, cli_env, "run", str(suite), "--name", name, "--results", "results")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"run name {name!r} is written as file name {stem!r}" in out.stdout
    # nothing escaped the working folder, and inside it only reports/ and results/ were written
    assert {p for p in tmp_path.iterdir()} == outside_before
    assert {p.name for p in work.iterdir()} == {"reports", "results"}
    for path in _files(work):
        top = path.relative_to(work).parts[0]
        assert top in ("reports", "results"), path
    reports = _files(work / "reports")
    assert reports == {work / "reports" / f"{stem}.html"}
    run_folders = list((work / "results").iterdir())
    assert len(run_folders) == 1 and run_folders[0].is_dir()
    # the run keeps the name it was given
    assert json.loads((run_folders[0] / "run.json").read_text())["name"] == name
    # `report` with its default path says the same, and writes the same file
    again = _attnbench(work, cli_env, "report", name, "--results", "results")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"run name {name!r} is written as file name {stem!r}" in again.stdout
    assert _files(work / "reports") == reports


def _run_in_process(cwd: Path, env: dict, *args: str):
    """`attnbench ARGS` through click's runner, in `cwd` with the session's cache (as `_attnbench`, without a process)."""
    from click.testing import CliRunner

    from attnbench.cli import main

    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), env={"ATTNBENCH_RESULTS": None,
                                                         "ATTNBENCH_CACHE_DIR": env["ATTNBENCH_CACHE_DIR"]})
    finally:
        os.chdir(previous)


def _assert_failed_before_calibrating(out, needle: str) -> None:
    assert out.exit_code == 2, out.output
    assert needle in out.stderr, out.stderr
    assert "calibration (" not in out.output
    assert "Traceback" not in out.stderr


def test_results_path_that_is_a_file_fails_before_calibrating(tmp_path, cli_env):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    results = tmp_path / "results-file"
    results.write_text("not a folder")
    out = _run_in_process(tmp_path, cli_env, "run", str(suite), "--no-report", "--results", str(results))
    _assert_failed_before_calibrating(out, f"results folder {results} is a file")
    assert results.read_text() == "not a folder"


def test_results_path_under_a_file_fails_before_calibrating(tmp_path, cli_env):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    results = blocker / "results"
    out = _run_in_process(tmp_path, cli_env, "run", str(suite), "--no-report", "--results", str(results))
    _assert_failed_before_calibrating(out, f"cannot create results folder {results}")


def test_read_only_results_folder_fails_before_calibrating(tmp_path, cli_env):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Root ignores mode bits; /proc/self is a folder that refuses new files to root too (Linux).
        results = Path("/proc/self")
        out = _run_in_process(tmp_path, cli_env, "run", str(suite), "--no-report", "--results", str(results))
    else:
        results = tmp_path / "ro"
        results.mkdir()
        results.chmod(0o500)
        try:
            out = _run_in_process(tmp_path, cli_env, "run", str(suite), "--no-report", "--results", str(results))
        finally:
            results.chmod(0o700)
    _assert_failed_before_calibrating(out, f"results folder {results} cannot be written")


def test_reports_path_that_is_a_file_fails_before_calibrating(tmp_path, cli_env):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    (tmp_path / "reports").write_text("not a folder")
    out = _run_in_process(tmp_path, cli_env, "run", str(suite), "--results", "results")
    _assert_failed_before_calibrating(out, "reports folder reports is a file")

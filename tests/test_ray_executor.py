"""`attnbench run --executor ray` on a local Ray instance, driven through the command line as a user would.

Each driver starts its own local Ray (two CPUs); the throw-away faulty plugins
(`plugin_fixtures`, among them ``fault-abort``, whose forward calls os.abort())
are installed as a distribution on PYTHONPATH, which the executor passes on to
the Ray workers.
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
from plugin_fixtures import write_faulty_plugins
from tiny_suites import tiny_suite

from attnbench.store import load_run

pytestmark = pytest.mark.e2e
ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]


def test_without_ray_the_executor_says_how_to_install_it():
    code = ("import sys; sys.modules['ray'] = None\n"        # as if Ray were not installed
            "from attnbench.engine.executors import make_executor\n"
            "make_executor('ray', address=None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "AttnbenchError: --executor ray needs Ray: pip install 'attnbench[ray]'" in done.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    import ray  # noqa: F401  (a test dependency: a missing Ray fails the tier)
    plugins = write_faulty_plugins(tmp_path_factory.mktemp("ray-plugins"))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), environment.get("PYTHONPATH")]))
    environment.pop("ATTNBENCH_PLUGINS", None)
    environment["OMP_NUM_THREADS"] = "1"
    environment["RAY_USAGE_STATS_ENABLED"] = "0"
    return environment


def no_core_dumps() -> None:
    """No core files from the planted crashes; Ctrl-C acts even when the tests run as a background job."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*ATTNBENCH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=no_core_dumps)


def only_run(results: Path):
    (path,) = [p for p in results.iterdir() if (p / "run.json").is_file()]
    return load_run(path)


def test_ray_run_matches_a_local_run_and_stores_crashes(env, tmp_path):
    suite = tmp_path / "shape.toml"
    suite.write_text(tiny_suite("shape", ["naive", "sdpa-math", "fault-abort", "flash-attn"]))
    runs = {}
    for executor in ("local", "ray"):
        results = tmp_path / executor
        done = run_cli(["run", str(suite), "--executor", executor, "--results", str(results), "--no-report"],
                       env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[executor] = only_run(results)

    shape = {name: {cell.case_id: cell.result.status for cell in run.cells} for name, run in runs.items()}
    assert shape["ray"] == shape["local"]
    statuses = sorted(shape["ray"].values())
    assert statuses == ["crashed"] * 2 + ["ok"] * 4 + ["unsupported"] * 2
    assert runs["ray"].status == "finished"

    for cell in runs["ray"].cells:
        result = cell.result
        if cell.case["variant"] == "fault-abort":
            assert "killed by signal SIGABRT" in result.reason
            assert result.worker["node"]["ray_node_id"]
        if result.status == "ok":
            node = result.worker["node"]
            assert node["hostname"] == runs["local"].run.environment["hostname"]
            assert node["torch"] == runs["local"].run.environment["torch"]
            assert node["ray_node_id"]
            assert result.worker["executor"] == "ray"
            assert result.accuracy.output.rel_l2_error < 1e-5
    # The same worker process measured every ok cell: the crashes restarted it, the actor lived on.
    ok_pids = {cell.result.worker["pid"] for cell in runs["ray"].cells if cell.result.status == "ok"}
    assert len(ok_pids) <= 3
    local_ok = [c for c in runs["local"].cells if c.result.status == "ok"]
    assert all("node" not in c.result.worker for c in local_ok)


def test_interrupted_ray_run_resumes_with_every_cell_once(env, tmp_path):
    suite = tmp_path / "long.toml"
    suite.write_text(tiny_suite("long", ["naive", "sdpa-math"], [64, 128, 256, 512], sweep={"causal": [False, True]},
                                measure={"budget_s": 0.3}))
    results = tmp_path / "results"
    driver = subprocess.Popen([*ATTNBENCH, "run", str(suite), "--executor", "ray", "--results", str(results),
                               "--no-report"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=no_core_dumps)
    try:
        deadline = time.monotonic() + 240
        cells_file = None
        while time.monotonic() < deadline and driver.poll() is None:
            found = list(results.glob("*/cells.jsonl")) if results.exists() else []
            if found and len(found[0].read_text().splitlines()) >= 2:
                cells_file = found[0]
                break
            time.sleep(0.2)
        assert cells_file is not None, "the ray run stored no cells in time"
        os.kill(driver.pid, signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 3, stderr
    assert "run interrupted" in stderr
    interrupted = only_run(results)
    assert interrupted.status == "interrupted"
    first = len(interrupted.cells)
    assert 2 <= first < 16

    done = run_cli(["run", "--resume", str(interrupted.path), "--executor", "ray", "--results", str(results),
                    "--no-report"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = only_run(results)
    assert resumed.status == "finished"
    lines = [json.loads(line) for line in cells_file.read_text().splitlines() if line.strip()]
    ids = [line["case_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 16                  # every cell exactly once, none lost, none twice
    assert resumed.problems == ()
    assert {cell.result.status for cell in resumed.cells} == {"ok"}

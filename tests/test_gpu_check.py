"""The prepared GPU check (benchmarks/gpu_check.sh) on a CPU machine: its staged package, its usage
errors and its dry run, which must list exactly what a CUDA machine would run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

from stage_package import stage  # noqa: E402

PROBE = """
import json, attnbench
from attnbench.core.registry import default_registry
from importlib import resources
print(json.dumps({"file": attnbench.__file__, "variants": default_registry().names(),
                  "suites": sorted(p.name for p in resources.files("attnbench.suites").iterdir())}))
"""


def test_the_staged_package_is_the_one_imported_with_every_built_in_variant(tmp_path):
    info = stage(tmp_path / "stage")
    entry_points = (info / "entry_points.txt").read_text()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["attnbench.variants"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stage")}
    probe = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                                      cwd=tmp_path, check=True).stdout)
    assert probe["file"] == str(tmp_path / "stage" / "attnbench" / "__init__.py")
    assert set(declared) <= set(probe["variants"])
    assert "gpu-smoke.toml" in probe["suites"] and "quick.toml" in probe["suites"]
    assert "attnbench = attnbench.cli:main" in entry_points and "[pytest11]" in entry_points


def test_gpu_check_refuses_a_missing_folder_or_an_unknown_option():
    for args in ([], ["out", "--fast"]):
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and "usage: bash benchmarks/gpu_check.sh OUT" in done.stderr


@pytest.mark.e2e
def test_the_dry_run_lists_every_cuda_test_and_every_cell_of_the_suite(tmp_path):
    from attnbench.core.registry import default_registry
    from attnbench.plan.suite import expand, load_suite

    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "tests"],
                               capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    cuda_tests = {line for line in collected.splitlines() if "::" in line}
    listed = {line.strip() for line in out.splitlines() if "::" in line}
    assert cuda_tests and listed == cuda_tests
    cells = expand(load_suite("gpu-smoke"), default_registry())
    assert f"suite gpu-smoke: {len(cells)} cells" in out
    assert "run gpu-smoke --results" in out and "expected time: at most 460 s" in out
    assert not (tmp_path / "out" / "results").exists()          # nothing was run

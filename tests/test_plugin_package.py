"""Variants from other distributions, through the real entry point mechanism.

The example package is built and installed with pip into a fresh virtual
environment; throw-away distributions (a ``.dist-info`` folder and a module on
PYTHONPATH) stand in for broken third-party plugins. Everything is observed
through the `attnbench` command line, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from plugin_fixtures import EXACT_SOFTMAX, write_distribution
from tiny_suites import tiny_suite

from attnbench.store import list_runs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "attnbench-sigmoid-attention"

pytestmark = pytest.mark.e2e


GOOD_VARIANT = EXACT_SOFTMAX + """

class Good(ExactSoftmax):
    name = "good"
    family = "test"

    def prepare(self, case, inputs):
        return lambda: self._exact(inputs, case)
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding four throw-away distributions: one good, three broken in different ways."""
    root = tmp_path_factory.mktemp("plugins")
    write_distribution(root, "good-plugin", "good_plugin", GOOD_VARIANT, {"good": "good_plugin:Good"})
    write_distribution(root, "broken-plugin", "broken_plugin", 'raise RuntimeError("broken on purpose")\n',
                       {"broken": "broken_plugin:Broken"})
    write_distribution(root, "not-a-variant-plugin", "not_a_variant", "NOT_A_VARIANT = {'name': 'x'}\n",
                       {"notavariant": "not_a_variant:NOT_A_VARIANT"})
    write_distribution(root, "shadow-plugin", "shadow_plugin", """
        from attnbench import Variant


        class ShadowNaive(Variant):
            name = "naive"
            family = "shadow"
            computes = "softmax_attention"
    """, {"naive": "shadow_plugin:ShadowNaive"})
    return root


def attnbench(args: list[str], env: dict[str, str], cwd: Path, python: str = sys.executable,
              timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "attnbench.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def plugin_env(cli_env: dict[str, str], plugin_path: Path, **extra: str) -> dict[str, str]:
    env = dict(cli_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    env.pop("ATTNBENCH_PLUGINS", None)
    env.update(extra)
    return env


def list_json(env: dict[str, str], cwd: Path, python: str = sys.executable) -> dict:
    done = attnbench(["list", "--json"], env, cwd, python)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write_suite(path: Path, variants: list[str], **tables) -> Path:
    path.write_text(tiny_suite(path.stem, variants, **tables), encoding="utf-8")
    return path


def test_broken_plugins_are_reported_with_their_distribution(plugin_path, cli_env, tmp_path):
    listing = list_json(plugin_env(cli_env, plugin_path), tmp_path)
    failed = {f["entry_point"]: f for f in listing["failed_plugins"]}
    assert set(failed["broken"]) == {"entry_point", "target", "distribution", "error"}

    assert failed["broken"]["distribution"] == "broken-plugin"
    assert failed["broken"]["target"] == "broken_plugin:Broken"
    assert failed["broken"]["error"] == "RuntimeError: broken on purpose"

    assert failed["notavariant"]["distribution"] == "not-a-variant-plugin"
    assert failed["notavariant"]["error"].startswith("TypeError:")
    assert "not an attnbench.Variant" in failed["notavariant"]["error"]

    assert failed["naive"]["distribution"] == "shadow-plugin"
    assert "already taken by distribution 'attnbench'" in failed["naive"]["error"]

    variants = {v["name"]: v for v in listing["variants"]}
    assert variants["naive"]["distribution"] == "attnbench"      # the built-in kept its name
    assert variants["naive"]["family"] == "naive"
    assert variants["good"]["distribution"] == "good-plugin"
    assert variants["good"]["available"]["cpu"] is True


def test_other_variants_still_run_beside_broken_plugins(plugin_path, cli_env, tmp_path):
    env = plugin_env(cli_env, plugin_path)
    suite = write_suite(tmp_path / "beside-broken.toml", ["naive", "good"])
    done = attnbench(["run", str(suite), "--results", str(tmp_path / "results"), "--no-report"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = list_runs(tmp_path / "results")
    assert run.status == "finished"
    cells = {(c.case["variant"], c.case["seq_len"]): c for c in run.cells}
    assert sorted(cells) == [("good", 64), ("good", 128), ("naive", 64), ("naive", 128)]
    for cell in cells.values():
        assert cell.result.status == "ok", cell.result.reason
        assert cell.result.accuracy.output.rel_l2_error < 1e-5
    assert cells[("good", 64)].meta["distribution"] == "good-plugin"

    broken = write_suite(tmp_path / "uses-broken.toml", ["broken"])
    refused = attnbench(["run", str(broken), "--results", str(tmp_path / "results"), "--no-report"], env, tmp_path)
    assert refused.returncode == 2
    assert "did not load: RuntimeError: broken on purpose" in refused.stderr
    assert "'broken-plugin'" in refused.stderr
    assert len(list_runs(tmp_path / "results")) == 1                # nothing was run


def test_attnbench_plugins_restricts_what_loads(plugin_path, cli_env, tmp_path):
    listing = list_json(plugin_env(cli_env, plugin_path, ATTNBENCH_PLUGINS="naive, good"), tmp_path)
    assert [v["name"] for v in listing["variants"]] == ["good", "naive"]
    assert {v["name"]: v["distribution"] for v in listing["variants"]} == {"good": "good-plugin",
                                                                         "naive": "attnbench"}
    # The broken ones were never imported, so nothing failed; the shadowing 'naive' entry point
    # is allowed by name, but loses to the built-in, which loads first.
    assert [(f["entry_point"], f["distribution"]) for f in listing["failed_plugins"]] == [("naive", "shadow-plugin")]


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the example package installed by pip from a copy of its folder.

    The venv layers on the project's environment (a .pth file adds its
    site-packages, where attnbench and torch live), so only the example itself
    is installed; the copy keeps pip's build files out of the repository.
    """
    root = tmp_path_factory.mktemp("example-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    parent = sysconfig.get_paths()["purelib"]
    (site_packages / "_attnbench_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    source = root / "attnbench-sigmoid-attention"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                                "--disable-pip-version-check", "--no-input", str(source)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site_packages / "attnbench_sigmoid_attention").is_dir()    # installed into the new venv, not the project's
    return venv


def test_example_package_installs_lists_and_runs_accurately(example_venv, cli_env, tmp_path):
    python = str(example_venv / "bin" / "python")
    env = dict(cli_env)
    env.pop("ATTNBENCH_PLUGINS", None)
    env.pop("PYTHONPATH", None)

    listing = list_json(env, tmp_path, python)
    variants = {v["name"]: v for v in listing["variants"]}
    sigmoid = variants["sigmoid"]
    assert sigmoid["distribution"] == "attnbench-sigmoid-attention"
    assert sigmoid["computes"] == "sigmoid_attention"
    assert sigmoid["available"]["cpu"] is True
    assert "sigmoid" not in {f["entry_point"] for f in listing["failed_plugins"]}

    suite = write_suite(tmp_path / "sigmoid.toml", ["sigmoid"], sweep={"causal": [False, True]})
    done = attnbench(["run", str(suite), "--results", str(tmp_path / "results"), "--no-report"], env, tmp_path,
                     python)
    assert done.returncode == 0, done.stderr
    (run,) = list_runs(tmp_path / "results")
    assert run.status == "finished"
    assert len(run.cells) == 4
    for cell in run.cells:
        result = cell.result
        assert result.status == "ok", result.reason
        assert cell.meta["distribution"] == "attnbench-sigmoid-attention"
        assert result.accuracy.output.rel_l2_error < 1e-5
        assert result.accuracy.output.nonfinite == 0
        seq_len = cell.case["seq_len"]
        visible = seq_len * (seq_len + 1) // 2 if cell.case.get("causal") else seq_len * seq_len
        assert result.flops == 4 * 1 * 2 * visible * 32                        # the function's useful FLOPs
        assert result.performed_flops == 4 * 1 * 2 * seq_len * seq_len * 32    # the full product it executes
        assert result.accuracy.ok is True
        assert result.memory.predicted_bytes >= 2 * seq_len * seq_len * 4     # the (B·H, N, M) scores, fp32
        assert result.timing.reps >= 3

"""The distribution as users install it: a wheel built from the repository, read back with zipfile.

The repository keeps the folders harness/, variants/ and suites/; the wheel installs them as one
import package, `attnbench` (pyproject's package-dir), so nothing named `harness` or `variants`
lands in site-packages beside other distributions of those names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("harness", "variants", "suites", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built by pip from a copy of the sources (build files stay out of the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "--no-input", "-w", str(root / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("attnbench-*.whl")
    return wheel


def top_level_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def test_pyproject_lists_every_package_of_the_three_folders():
    """package-dir renames the folders, so setuptools cannot find the packages itself: the list is explicit."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    assert set(setuptools["packages"]) == found, "add these to [tool.setuptools] packages: " + \
        ", ".join(sorted(found - set(setuptools["packages"])))


def test_the_wheel_installs_one_import_package_named_attnbench(wheel):
    names = top_level_names(wheel)
    dist_info = {name for name in names if name.endswith(".dist-info")}
    assert names - dist_info == {"attnbench"}, sorted(names)
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        info = next(name for name in files if name.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(info).decode()
    assert {"attnbench/__init__.py", "attnbench/cli/main.py", "attnbench/variants/naive.py",
            "attnbench/suites/quick.toml", "attnbench/report/templates/report.html"} <= files
    assert "attnbench = attnbench.cli:main" in entry_points
    assert "naive = attnbench.variants.naive:NaiveAttention" in entry_points
    # every built-in suite and every module of the three folders is in it
    expected = {f"attnbench/suites/{p.name}" for p in (ROOT / "suites").glob("*.toml")}
    expected |= {"attnbench/" + str(p.relative_to(ROOT / "harness")) for p in (ROOT / "harness").rglob("*.py")}
    expected |= {"attnbench/variants/" + str(p.relative_to(ROOT / "variants")) for p in (ROOT / "variants").rglob("*.py")}
    assert expected <= files, sorted(expected - files)


@pytest.mark.e2e
def test_attnbench_run_quick_works_from_the_wheel(wheel, tmp_path, cli_env):
    """The wheel installed into a fresh venv layered on the project's (for torch and the other
    dependencies); the venv's own copy is the one imported, and `attnbench run quick` runs from it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    parent = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site_packages / "_attnbench_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--disable-pip-version-check", "--no-input", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site_packages / "attnbench" / "suites" / "quick.toml").is_file()
    assert not (site_packages / "harness").exists() and not (site_packages / "variants").exists()
    where = subprocess.run([str(python), "-c", "import attnbench, json; print(json.dumps(attnbench.__file__))"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert json.loads(where.stdout).startswith(str(site_packages)), where.stdout
    run = subprocess.run([str(venv / "bin" / "attnbench"), "run", "quick", "--variant", "naive", "--variant",
                          "sdpa-math", "--seq-len", "256", "--no-report", "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, cwd=tmp_path, env=cli_env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "status finished" in run.stdout and "cells by status: ok" in run.stdout, run.stdout

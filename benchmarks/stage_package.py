"""Lay attnbench out as an installed package in a folder, without pip, setuptools or a network.

    python benchmarks/stage_package.py STAGE

writes STAGE/attnbench/ (from pyproject's package-dir: harness/ as attnbench, variants/ as
attnbench.variants, suites/ as attnbench.suites) and STAGE/attnbench-<version>.dist-info with the
entry points (the built-in variants, the `attnbench` command, the pytest plugin), so that
``PYTHONPATH=STAGE python -m attnbench.cli ...`` finds every built-in variant. It is for a machine
whose Python has torch and the dependencies but cannot install anything (the GPU check,
benchmarks/gpu_check.sh); everywhere else install with pip.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stage(target: Path, root: Path = ROOT) -> Path:
    """Copy the packages into `target` and write their dist-info; returns the dist-info folder."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    package_dir = project["tool"]["setuptools"]["package-dir"]
    target.mkdir(parents=True, exist_ok=True)
    for package, folder in sorted(package_dir.items(), key=lambda item: item[0].count(".")):
        destination = target.joinpath(*package.split("."))
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(root / folder, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = target / f"{meta['name']}-{meta['version']}.dist-info"
    if info.exists():
        shutil.rmtree(info)
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n",
                                   encoding="utf-8")
    groups = {"console_scripts": meta.get("scripts", {}), **meta.get("entry-points", {})}
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items()) + "\n"
                for group, entries in groups.items()), encoding="utf-8")
    (info / "top_level.txt").write_text("\n".join(sorted({p.split(".")[0] for p in package_dir})) + "\n",
                                        encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", type=Path, help="folder to lay the package out in (put it on PYTHONPATH)")
    args = parser.parse_args(argv)
    info = stage(args.stage)
    print(f"staged {info.name[:-len('.dist-info')]} in {args.stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

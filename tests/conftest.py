"""Shared test setup: the `cuda` marker skips without a device; small helpers for suites and runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch sees none here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def faulty_registry(tmp_path, monkeypatch):
    """A registry that also holds the misbehaving variants of plugin_fixtures (a real dist-info on sys.path)."""
    from plugin_fixtures import write_faulty_plugins

    from harness.core.registry import load_registry

    site = write_faulty_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    yield load_registry()
    sys.modules.pop("attnbench_faulty", None)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def calibration_cache(tmp_path_factory) -> Path:
    """One calibration cache for the whole test session, outside the user's home."""
    return tmp_path_factory.mktemp("calibration-cache")


@pytest.fixture
def cli_env(tmp_path: Path, calibration_cache: Path) -> dict[str, str]:
    """Environment for running the `attnbench` console script in a subprocess."""
    env = dict(os.environ)
    env["ATTNBENCH_RESULTS"] = str(tmp_path / "results")
    env["ATTNBENCH_CACHE_DIR"] = str(calibration_cache)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env

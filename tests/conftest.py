"""Shared test setup: the tiers, the session's caches, the `cuda` marker; small helpers for suites and runs.

Two tiers: the default (`pytest -q`) and the end-to-end tier (`pytest -m e2e`),
see pyproject's markers. For the whole session (and every `attnbench`
subprocess it starts, which inherit the environment):
- `ATTNBENCH_CACHE_DIR` is a session folder holding a calibration prefilled
  for this machine's fingerprint (`TEST_CALIBRATION`), so no test run pays
  for, or depends on, measuring the machine; the calibration's own tests use
  their own folders;
- `TORCHINDUCTOR_CACHE_DIR` is a persistent folder (`$ATTNBENCH_TEST_INDUCTOR_CACHE`,
  else ~/.cache/attnbench-tests/inductor), so FlexAttention and the Mamba
  kernels compile once per machine, not once per worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Figures of a modest 2-core CPU; tests compare cells with each other, never with the machine.
TEST_CALIBRATION = {"float32": 40e9, "float64": 20e9, "float16": 2e9, "bfloat16": 4e9}
TEST_COPY_BYTES_PER_S = 10e9


def _inductor_cache() -> Path:
    configured = os.environ.get("ATTNBENCH_TEST_INDUCTOR_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "attnbench-tests" / "inductor"


def prefill_calibration(directory: Path) -> None:
    """Write `TEST_CALIBRATION` into `directory` under this machine's fingerprints (1, 2 and all threads)."""
    import torch

    from attnbench.measure.calibration import (
        _write_cache,
        cache_path,
        fingerprint_fields,
        fingerprint_hash,
    )

    for threads in sorted({1, 2, os.cpu_count() or 1, torch.get_num_threads()}):
        fields = fingerprint_fields("cpu", threads)
        fingerprint = fingerprint_hash(fields)
        _write_cache(cache_path(fingerprint, directory), {
            "matmul_flops_per_s": dict(TEST_CALIBRATION), "matmul_size": {dtype: 1024 for dtype in TEST_CALIBRATION},
            "copy_bytes_per_s": TEST_COPY_BYTES_PER_S, "copy_bytes": 256 << 20, "device": "cpu",
            "measured_at": "2026-01-01T00:00:00+00:00", "cached": False, "fingerprint": fingerprint,
            "fingerprint_fields": fields, "seconds": 0.0, "load_avg_1m": 0.0, "warnings": [],
            "method": "prefilled for the test session (tests/conftest.py), not measured",
        })


def pytest_configure(config):
    import shutil
    import tempfile

    session_cache = Path(tempfile.mkdtemp(prefix="attnbench-test-cache-"))
    config.add_cleanup(lambda: shutil.rmtree(session_cache, ignore_errors=True))
    prefill_calibration(session_cache)
    os.environ["ATTNBENCH_CACHE_DIR"] = str(session_cache)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_inductor_cache()))


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

    from attnbench.core.registry import load_registry

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
def calibration_cache() -> Path:
    """The session's calibration cache (prefilled, outside the user's home)."""
    return Path(os.environ["ATTNBENCH_CACHE_DIR"])


@pytest.fixture
def cli_env(tmp_path: Path, calibration_cache: Path) -> dict[str, str]:
    """Environment for running the `attnbench` console script in a subprocess."""
    env = dict(os.environ)
    env["ATTNBENCH_RESULTS"] = str(tmp_path / "results")
    env["ATTNBENCH_CACHE_DIR"] = str(calibration_cache)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.fixture
def flex():
    """The flex variant, or a skip where it cannot run here."""
    from attnbench.core.case import Case
    from attnbench.core.registry import default_registry

    variant = default_registry().get("flex")
    if variant.unsupported_reasons(Case(variant="flex", seq_len=128, head_dim=32)):
        pytest.skip("flex cannot run here")
    return variant

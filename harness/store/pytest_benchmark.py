"""A run as pytest-benchmark's JSON, so its own tools read our runs.

``attnbench export RUN --format pytest-benchmark -o FILE`` writes what
``pytest --benchmark-json`` writes: ``machine_info``, ``commit_info``,
``datetime``, ``version`` and one entry per benchmark with ``group``,
``name``, ``fullname``, ``params``, ``stats`` (every field pytest-benchmark
computes, plus the raw ``data`` and ``iterations``) and ``extra_info``. Then::

    pytest-benchmark compare base.json new.json            # one table, grouped by shape
    pytest-benchmark compare --between median base.json new.json

Only cells that finished ``ok`` with a timing become benchmarks. ``data`` is
the cell's raw samples, seconds per call; the statistics are computed from
them by pytest-benchmark's own `Stats`, so they mean exactly what they mean in
its files (a cell measured in K processes pools the K processes' samples; the
harness's own median of process medians is kept in ``extra_info``).
``iterations`` is the number of back-to-back calls a sample timed.

The helpers `shape_group` and `extra_info` are shared with the pytest
plugin's fixture, so both write the same groups and extra fields. Imports
neither torch nor the variants.
"""

from __future__ import annotations

from typing import Any

from attnbench.core.case import Case
from attnbench.core.metrics import METRICS
from attnbench.core.result import Result
from attnbench.store import Cell, LoadedRun


def shape_group(case: Case) -> str:
    """'attention cpu float32 full fwd B1H8N4096d64': what every variant in one table shares."""
    shape = f"B{case.batch}H{case.heads}N{case.seq_len}" + (f"M{case.kv_len}" if case.kv_len != case.seq_len else "")
    return (f"attention {case.device} {case.dtype} {'causal' if case.causal else 'full'} {case.mode} "
            f"{shape}d{case.head_dim}")


def benchmark_name(case: Case) -> str:
    """The case's label, with the seed and the input scale when they are not the defaults."""
    name = case.label
    if case.seed != 0:
        name += f"-seed{case.seed}"
    if case.qk_std != 1.0:
        name += f"-qkstd{case.qk_std:g}"
    return name


def extra_info(case: Case, result: Result) -> dict[str, Any]:
    """What pytest-benchmark keeps beside the stats: the case, and every exported metric (`METRICS`).

    ``attnbench_median_s`` repeats ``time_median_s`` under the name earlier exports used.
    """
    figures = {metric.name: metric.read(result) for metric in METRICS if metric.exported}
    figures["warnings"] = list(result.warnings)
    return {"attnbench_case": case.to_dict(), "case_id": case.id, "label": case.label, **figures,
            "attnbench_median_s": figures.get("time_median_s")}


def to_pytest_benchmark(loaded: LoadedRun) -> dict[str, Any]:
    """The run as a pytest-benchmark JSON document (a dict ready for json.dump)."""
    import pytest_benchmark

    run = loaded.run
    benchmarks = [_benchmark(run.suite_name, cell) for cell in loaded.cells
                  if cell.result.status == "ok" and cell.result.timing is not None and cell.result.timing.samples_s]
    return {
        "machine_info": _machine_info(run.environment),
        "commit_info": _commit_info(run.environment),
        "benchmarks": benchmarks,
        "datetime": run.started_at,
        "version": pytest_benchmark.__version__,
        "attnbench": {"run_id": run.run_id, "name": run.name, "suite": run.suite_name, "status": loaded.status,
                      "cells": len(loaded.cells), "exported": len(benchmarks)},
    }


def _benchmark(suite_name: str, cell: Cell) -> dict[str, Any]:
    from pytest_benchmark.stats import Stats

    case = Case.from_dict(cell.case)
    timing = cell.result.timing
    stats = Stats()
    for sample in timing.samples_s:
        stats.update(sample)
    name = benchmark_name(case)
    return {
        "group": shape_group(case),
        "name": name,
        "fullname": f"attnbench::{suite_name}::{name}",
        "params": {"variant": case.variant, **case.params, "seq_len": case.seq_len, "kv_len": case.kv_len,
                   "batch": case.batch, "heads": case.heads, "head_dim": case.head_dim, "dtype": case.dtype,
                   "causal": case.causal, "mode": case.mode, "device": case.device},
        "param": case.label,
        "extra_info": {**extra_info(case, cell.result), "family": cell.meta.get("family"),
                       "distribution": cell.meta.get("distribution")},
        "options": {"timer": f"attnbench:{timing.timer}", "disable_gc": False, "min_rounds": None,
                    "max_time": None, "min_time": None, "warmup": timing.warmup_s},
        "stats": {**stats.as_dict(), "data": list(timing.samples_s), "iterations": timing.calls_per_sample},
    }


def _machine_info(environment: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine_info keys, filled from the run's environment fingerprint."""
    text = environment.get("platform") or ""
    return {
        "node": environment.get("hostname"),
        "processor": environment.get("cpu_model"),
        "machine": _machine_from(text),
        "python_compiler": None,
        "python_implementation": None,
        "python_implementation_version": environment.get("python"),
        "python_version": environment.get("python"),
        "python_build": None,
        "release": None,
        "system": text.split("-", 1)[0] if text else None,
        "cpu": {"brand_raw": environment.get("cpu_model"), "count": environment.get("cpu_count_logical")},
        "attnbench_environment": environment,
    }


def _machine_from(platform_text: str) -> str | None:
    for arch in ("x86_64", "aarch64", "arm64", "ppc64le", "s390x", "AMD64"):
        if arch in platform_text:
            return arch
    return None


def _commit_info(environment: dict[str, Any]) -> dict[str, Any]:
    commit = environment.get("harness_commit") or ""
    return {"id": commit.removesuffix("-dirty") or None, "dirty": commit.endswith("-dirty"), "project": "attnbench",
            "branch": None, "time": None}

"""No cell inherits another's leak: workers restart between plugin distributions and over a memory budget."""

from __future__ import annotations

import json

import pytest
from tiny_suites import tiny_suite

from attnbench.core.registry import load_registry
from attnbench.engine.local_executor import LocalExecutor
from attnbench.engine.sweep import run_suite
from attnbench.plan.suite import parse_suite
from attnbench.store import load_run


def suite(*names: str):
    measure = {"warmup_s": 0.05, "budget_s": 0.1, "min_reps": 5, "accuracy": False, "telemetry": False}
    return parse_suite(tiny_suite("restarts", names, (256,), measure=measure), "restarts.toml")


def cells(run_path):
    return {c.case["variant"]: c for c in load_run(run_path).cells}


@pytest.mark.e2e
def test_a_leaky_plugins_worker_is_replaced_before_the_next_distributions_variant(faulty_registry, results_dir):
    leaky = run_suite(suite("fault-leak", "naive"), faulty_registry, results_dir / "with")
    alone = run_suite(suite("naive"), faulty_registry, results_dir / "without")
    after_leak, clean = cells(leaky.run_path), cells(alone.run_path)
    assert any(w.startswith("leak: ") for w in after_leak["fault-leak"].result.warnings)
    assert after_leak["fault-leak"].result.worker["pid"] != after_leak["naive"].result.worker["pid"]
    assert after_leak["naive"].result.memory.peak_bytes_fwd == clean["naive"].result.memory.peak_bytes_fwd
    held = after_leak["naive"].result.telemetry["worker_live_bytes_after"]
    leaked = after_leak["fault-leak"].result.telemetry["worker_live_bytes_after"]
    assert held < leaked - 64 * 2**20, (held, leaked)          # the new worker does not hold the leak
    restarts = json.loads((leaky.run_path / "run.json").read_text())["settings"]["worker_restarts"]
    assert restarts["count"] == 1 and restarts["start_s_total"] > 0
    assert "attnbench-faulty" in restarts["restarts"][0]["reason"]


@pytest.mark.e2e
def test_a_worker_over_its_budget_is_restarted_and_the_cost_is_stored(results_dir):
    registry = load_registry()
    executor = LocalExecutor(rss_budget_bytes=1)
    try:
        outcome = run_suite(suite("naive", "sdpa-math"), registry, results_dir, executor=executor)
    finally:
        executor.close()
    ran = cells(outcome.run_path)
    assert ran["naive"].result.worker["pid"] != ran["sdpa-math"].result.worker["pid"]
    restarts = json.loads((outcome.run_path / "run.json").read_text())["settings"]["worker_restarts"]
    assert restarts["count"] == 2 and restarts["rss_budget_bytes"] == 1
    assert all("over the budget" in r["reason"] and r["start_s"] > 0 for r in restarts["restarts"])

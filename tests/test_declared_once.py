"""Axes and metrics are declared once (`attnbench.core.axes`, `attnbench.core.metrics`) and everything reads them.

- every figure a cell stores (every field of the stored dataclasses, and every telemetry key a real cell
  and the stored reference runs hold) is a metric or is listed as raw, so nothing measured is silently
  left out of the tidy frame, the exports, compare and the report;
- every metric is a tidy column and an export field, every gated metric a ``--fail-on`` field;
- a toy axis and a toy metric registered in this process only reach a suite, the tidy frame, the CSV
  and pytest-benchmark exports and compare's gate, with no other file changed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from attnbench.core.axes import AXES, Axis
from attnbench.core.case import Case
from attnbench.core.metrics import METRICS, RAW_FIELDS, Metric, declared
from attnbench.core.registry import default_registry
from attnbench.core.result import Accuracy, ErrorMetrics, Memory, Result, TaskOutcome, Timing
from attnbench.core.settings import MeasureSettings
from attnbench.plan.suite import expand, parse_suite
from attnbench.report.compare import compare_runs
from attnbench.report.gates import gate_failures, gate_fields, parse_gate
from attnbench.store import Cell, RunWriter, load_run, now_iso, tidy_frame
from attnbench.store.export import export_run
from attnbench.store.runs import Run, new_run_id

DATA = Path(__file__).parent / "data"
STORED_TYPES = {"timing": Timing, "memory": Memory, "accuracy": Accuracy, "task": TaskOutcome}
FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5)


def schema_paths() -> set[str]:
    """Every field of a stored Result, dotted: 'timing.median_s', 'accuracy.output.rel_l2_error', ..."""
    paths = set()
    for spec in dataclasses.fields(Result):
        kind = STORED_TYPES.get(spec.name)
        if kind is None:
            paths.add(spec.name)
            continue
        for inner in dataclasses.fields(kind):
            if inner.name == "fidelity":
                continue                                    # a dict: its keys are read from the cells below
            if inner.name in ("output", "approx"):
                paths |= {f"{spec.name}.{inner.name}.{e.name}" for e in dataclasses.fields(ErrorMetrics)}
            else:
                paths.add(f"{spec.name}.{inner.name}")
    paths.discard("telemetry")
    return paths


def telemetry_paths(result: dict) -> set[str]:
    return {f"telemetry.{key}" for key in (result.get("telemetry") or {})}


def stored_results() -> list[dict]:
    results = []
    for folder in sorted(DATA.glob("reference-run-v*")):
        lines = (folder / "cells.jsonl").read_text(encoding="utf-8").splitlines()
        results += [json.loads(line)["result"] for line in lines if line.strip()]
    return results


def test_every_stored_figure_is_a_metric_or_listed_raw():
    registry = default_registry()
    fresh = [registry.get(name) for name in ("naive", "performer")]
    from attnbench.measure.cell import measure_case

    measured = [measure_case(Case(variant=v.name, seq_len=64, heads=2, head_dim=16, mode="fwd_bwd"), v, FAST)
                for v in fresh]
    assert all(r.status == "ok" for r in measured), [r.reason for r in measured]
    paths = schema_paths()
    for result in [*stored_results(), *(r.to_dict() for r in measured)]:
        paths |= telemetry_paths(result)
        fidelity = (result.get("accuracy") or {}).get("fidelity") or {}
        paths |= {f"accuracy.fidelity.{key}" for key in fidelity}
    assert "telemetry.bytes_moved" in paths and "accuracy.fidelity.approx_kl" in paths
    undeclared = sorted(path for path in paths if not declared(path))
    assert not undeclared, (f"stored but neither a metric (attnbench.core.metrics.METRICS) nor listed in RAW_FIELDS: "
                            f"{undeclared}")
    assert not set(RAW_FIELDS) & {m.path for m in METRICS}


def test_every_metric_is_a_column_an_export_field_and_every_gate_a_fail_on_field(tmp_path):
    loaded = load_run(DATA / "reference-run-v3")
    frame = tidy_frame([loaded])
    assert set(METRICS.names()) <= set(frame.columns)
    document = json.loads(export_run(loaded, "pytest-benchmark", tmp_path / "pb.json").read_text())
    extra = document["benchmarks"][0]["extra_info"]
    assert {m.name for m in METRICS if m.exported} <= set(extra)
    assert extra["attnbench_median_s"] == extra["time_median_s"] == frame["time_median_s"].iloc[0]
    assert set(gate_fields()) == {"median", "peak_memory", "error", "accuracy", "recall"}
    for gate in gate_fields():
        assert parse_gate(gate if gate == "accuracy" else f"{gate}:5%").field == gate


@pytest.fixture
def toy_axis_and_metric():
    axis = AXES.register(Axis("toy_level", int, 0, "a toy axis", minimum=0, label=lambda v: f"toy{v}",
                              groups_reports=True))
    metric = METRICS.register(Metric("toy_score", "1", "telemetry.toy_score", "a toy figure", better="lower",
                                     gate="toy"))
    try:
        yield axis, metric
    finally:
        AXES.unregister("toy_level")
        METRICS.unregister("toy_score")


TOY_SUITE = """
[suite]
name = "toy"
variants = ["naive"]
[defaults]
seq_len = 64
heads = 2
head_dim = 16
[sweep]
toy_level = [0, 3]
"""


def write_toy_run(results: Path, name: str, cases: list[Case], score: float) -> Path:
    run = Run(run_id=new_run_id(name), name=name, suite_name="toy", suite_text=TOY_SUITE, started_at=now_iso(),
              environment={}, calibration={}, harness_version="test")
    writer = RunWriter.create(results, run)
    try:
        for case in cases:
            samples = (1e-3, 1.1e-3, 0.9e-3)
            timing = Timing(samples_s=samples, median_s=1e-3, iqr_s=1e-4, ci_low_s=None, ci_high_s=None,
                            calls_per_sample=1, warmup_s=0.0, warmup_calls=1, setup_s=0.0, stop_reason="ci",
                            timer="perf_counter_ns")
            result = Result("ok", timing=timing, telemetry={"toy_score": score * (1 + case.axis("toy_level"))})
            writer.append(Cell(case_id=case.id, case=case.to_dict(), result=result,
                               meta={"family": "naive", "computes": "softmax_attention"}, recorded_at=now_iso()))
    finally:
        writer.close("finished")
    return writer.path


def test_a_toy_axis_and_metric_reach_the_suite_frame_exports_and_compare(toy_axis_and_metric, tmp_path):
    cases = expand(parse_suite(TOY_SUITE, "toy.toml"), default_registry())
    assert [c.axis("toy_level") for c in cases] == [0, 3]
    assert cases[0].id == Case(variant="naive", seq_len=64, heads=2, head_dim=16).id   # the default leaves the id
    assert cases[1].label.endswith("-toy3") and cases[1].id != cases[0].id
    with pytest.raises(Exception, match="toy_level"):
        parse_suite(TOY_SUITE.replace("[0, 3]", "[-1]"), "toy.toml")

    base = load_run(write_toy_run(tmp_path, "base", cases, score=1.0))
    new = load_run(write_toy_run(tmp_path, "new", cases, score=1.5))
    frame = tidy_frame([new])
    assert list(frame["toy_level"]) == [0, 3]
    assert list(frame["toy_score"]) == [1.5, 6.0]

    with open(export_run(new, "csv", tmp_path / "new.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["toy_level"], r["toy_score"]) for r in rows] == [("0", "1.5"), ("3", "6.0")]
    document = json.loads(export_run(new, "pytest-benchmark", tmp_path / "new.json").read_text())
    assert sorted(b["extra_info"]["toy_score"] for b in document["benchmarks"]) == [1.5, 6.0]

    comparison = compare_runs(base, new)
    assert {c.figures["toy_score"] for c in comparison.cells} == {(1.0, 1.5), (4.0, 6.0)}
    failures = gate_failures(comparison, [parse_gate("toy:40%")])
    assert len(failures) == 2 and all("toy_score +50.0%" in line for line in failures)
    assert not gate_failures(comparison, [parse_gate("toy:60%")])
    assert not gate_failures(compare_runs(new, base), [parse_gate("toy:5%")])

"""Profiling: files a real reader opens, the memory peak against the analytic sizes, and bad input."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from attnbench.cli import main
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.profiling import (
    ParamError,
    UnsupportedCaseError,
    memory_peak,
    parse_params,
    profile_case,
    profile_run,
)


def test_profile_naive_writes_trace_ops_and_the_exact_memory_peak(tmp_path):
    case = Case(variant="naive", seq_len=128, heads=2, head_dim=32)
    summary = profile_case(case, default_registry().get("naive"), tmp_path, steps=2, warmup_calls=1)
    trace = json.loads((tmp_path / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"aten::bmm", "aten::_softmax", "attnbench.step", "[memory]"} <= names
    with (tmp_path / "ops.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    bmm = next(row for row in rows if row["name"] == "aten::bmm")
    assert int(bmm["calls"]) == 2 * 2  # q·kᵀ and P·v, per step
    assert "attnbench.step" not in {row["name"] for row in rows}
    memory = json.loads((tmp_path / "memory.json").read_text())["devices"]["cpu"]
    scores = 2 * 128 * 128 * 4  # one (B, H, N, M) float32 matrix
    # The peak is the scores and the probabilities live together, plus at most a few scalars.
    assert 2 * scores <= memory["peak_bytes"] <= 2 * scores + 4096
    assert memory["peak_op"] == "aten::_softmax"
    live = {row["op"]: row["bytes"] for row in memory["live_at_peak"]}
    assert live["aten::bmm"] == scores and live["aten::_softmax"] == scores
    assert summary.ops[0]["name"] in ("aten::bmm", "aten::_softmax", "aten::mul_", "aten::matmul")  # naive's own ops
    assert json.loads((tmp_path / "summary.json").read_text())["case_id"] == case.id


def test_memory_peak_from_synthetic_events():
    def op(name, ts, dur, tid=1):
        return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": tid}

    def mem(ts, size, addr, tid=1, device_type=0):
        return {"ph": "i", "name": "[memory]", "ts": ts, "tid": tid,
                "args": {"Bytes": size, "Addr": addr, "Device Type": device_type, "Device Id": -1,
                         "Total Allocated": 0}}

    events = [
        op("outer", 0, 100), op("inner", 10, 20), op("other", 50, 20),
        mem(15, 1000, 1),    # by inner (the innermost op around t=15)
        mem(40, 500, 2),     # by outer
        mem(45, -64, 99),    # frees memory allocated before profiling: ignored
        mem(55, 3000, 3),    # by other: live 4500, the peak
        mem(60, -1000, 1),
        mem(65, -3000, 3),
        mem(80, 200, 4),
        mem(90, 2048, 5, device_type=1),
    ]
    report = memory_peak(events)["devices"]
    cpu = report["cpu"]
    assert cpu["peak_bytes"] == 4500 and cpu["peak_op"] == "other" and cpu["peak_at_us"] == 55
    assert cpu["live_at_peak"] == [{"op": "other", "bytes": 3000, "count": 1},
                                   {"op": "inner", "bytes": 1000, "count": 1},
                                   {"op": "outer", "bytes": 500, "count": 1}]
    assert report["cuda"]["peak_bytes"] == 2048


def test_parse_params_types_and_errors():
    declared = {"window": 256, "scale": 1.0, "causal_only": False, "kind": "general"}
    assert parse_params(["window=64", "scale=0.5", "causal_only=true", "kind=dot"], declared, "x") == {
        "window": 64, "scale": 0.5, "causal_only": True, "kind": "dot"}
    with pytest.raises(ParamError, match="expected KEY=VALUE"):
        parse_params(["window"], declared, "x")
    with pytest.raises(ParamError, match="no knob 'windw'.*did you mean: window"):
        parse_params(["windw=3"], declared, "x")
    with pytest.raises(ParamError, match="expected an integer"):
        parse_params(["window=wide"], declared, "x")
    with pytest.raises(ParamError, match="expected true or false"):
        parse_params(["causal_only=maybe"], declared, "x")


def test_unsupported_case_is_refused_before_running(tmp_path):
    case = Case(variant="sdpa-efficient", seq_len=64)
    with pytest.raises(UnsupportedCaseError, match="no CPU kernel"):
        profile_case(case, default_registry().get("sdpa-efficient"), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("arguments, message", [
    (["profile", "no-such-variant", "--seq-len", "64"], "unknown variant"),
    (["profile", "naive", "--seq-len", "64", "--param", "window=3"], "no knob"),
    (["profile", "sdpa-efficient", "--seq-len", "64"], "cannot run"),
    (["profile", "naive", "--seq-len", "0"], "seq_len must be a positive integer"),
    (["profile", "naive", "--seq-len", "64", "--dtype", "fp12"], "unknown dtype"),
])
def test_cli_bad_input_exits_2(arguments, message, tmp_path):
    result = CliRunner().invoke(main, [*arguments, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_profile_writes_the_folder(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", "naive", "--seq-len", "64", "--heads", "2", "--steps", "1",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {"trace.json", "ops.csv", "memory.json", "summary.json"} <= {p.name for p in out.iterdir()}
    assert "memory peak on cpu" in result.output and "aten::bmm" in result.output


def test_profile_run_profiles_every_ok_cell(tmp_path):
    from attnbench.core.result import Result, Run
    from attnbench.store import Cell, RunWriter, now_iso

    run = Run(run_id="r1", name="r1", suite_name="t", suite_text="", started_at=now_iso())
    writer = RunWriter.create(tmp_path, run)
    ok = Case(variant="naive", seq_len=32, heads=1)
    skipped = Case(variant="naive", seq_len=64, heads=1)
    writer.append(Cell(case_id=ok.id, case=ok.to_dict(), result=Result("ok"), meta={}, recorded_at=now_iso()))
    writer.append(Cell(case_id=skipped.id, case=skipped.to_dict(), result=Result("skipped", "no"), meta={},
                       recorded_at=now_iso()))
    writer.close("finished")
    index = profile_run(writer.path, steps=1)
    assert list(index) == [ok.id]
    folder = writer.path / "profiles" / ok.id
    assert (folder / "trace.json").exists() and index[ok.id]["peak_bytes"]["cpu"] > 0
    assert json.loads((writer.path / "profiles" / "index.json").read_text()) == index


@pytest.mark.cuda
def test_profile_on_cuda_has_device_time_and_memory(tmp_path):
    case = Case(variant="naive", seq_len=256, heads=2, head_dim=64, dtype="float16", device="cuda")
    summary = profile_case(case, default_registry().get("naive"), tmp_path, steps=2)
    assert summary.sort_key == "self_device_s" and summary.ops[0]["self_device_s"] > 0
    scores = 2 * 256 * 256 * 2
    assert summary.memory["devices"]["cuda"]["peak_bytes"] >= 2 * scores

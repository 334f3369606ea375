"""The results store: durable appends, torn and corrupted lines, the tidy table, run references, the lock."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attnbench.core.case import Case
from attnbench.core.errors import StoreError
from attnbench.core.result import Accuracy, ErrorMetrics, Memory, Result, Run, Timing
from attnbench.store import (
    TIDY_COLUMNS,
    Cell,
    RunWriter,
    list_runs,
    load_run,
    now_iso,
    resolve_run,
    tidy_frame,
)


def make_run(name="r", run_id=None, started_at=None) -> Run:
    return Run(run_id=run_id or f"id-{name}", name=name, suite_name="s", suite_text="[suite]\n",
               started_at=started_at or now_iso())


def ok_result(median=0.01) -> Result:
    timing = Timing(samples_s=(median * 0.99, median, median * 1.01), median_s=median, iqr_s=median * 0.01,
                    ci_low_s=median * 0.99, ci_high_s=median * 1.01, calls_per_sample=1, warmup_s=0.1,
                    warmup_calls=3, setup_s=0.2, stop_reason="ci", timer="cpu-perf-counter", threads=2)
    return Result("ok", timing=timing, memory=Memory(1000, None, "linux-vmhwm", 64),
                  accuracy=Accuracy(output=ErrorMetrics(1e-7, 2e-7, 0)), flops=10**9, flops_per_s=1e11)


def cell_for(case: Case, result: Result) -> Cell:
    return Cell(case_id=case.id, case=case.to_dict(), result=result, meta={"family": "naive"})


def test_round_trip_and_tidy_columns(results_dir):
    writer = RunWriter.create(results_dir, make_run())
    cases = [Case(variant="naive", seq_len=n, params={"window": 4}) for n in (64, 128)]
    writer.append(cell_for(cases[0], ok_result()))
    writer.append(cell_for(cases[1], Result("oom", "ran out")))
    writer.close("finished")
    loaded = load_run(writer.path)
    assert loaded.status == "finished" and not loaded.problems
    assert [c.case_id for c in loaded.cells] == [c.id for c in cases]
    assert loaded.cells[0].result == ok_result()
    frame = tidy_frame([loaded])
    assert list(frame.columns[: len(TIDY_COLUMNS)]) == list(TIDY_COLUMNS)
    assert "param_window" in frame.columns
    assert frame.time_median_s.iloc[0] == 0.01 and pd.isna(frame.time_median_s.iloc[1])
    assert frame.status.tolist() == ["ok", "oom"] and frame.reason.iloc[1] == "ran out"
    assert json.loads(frame.params.iloc[0]) == {"window": 4}


def test_torn_last_line_and_corrupted_middle_line_are_reported_and_skipped(results_dir):
    writer = RunWriter.create(results_dir, make_run())
    cases = [Case(variant="naive", seq_len=n) for n in (64, 128, 256)]
    for case in cases:
        writer.append(cell_for(case, ok_result()))
    writer.close("finished")
    cells_path = writer.path / "cells.jsonl"
    lines = cells_path.read_bytes().split(b"\n")
    lines[1] = b'{"case_id": "broken'
    cells_path.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[2][:40])
    before = cells_path.read_bytes()
    loaded = load_run(writer.path)
    assert [c.case_id for c in loaded.cells] == [cases[0].id, cases[2].id]
    assert len(loaded.problems) == 2
    assert "cells.jsonl:2: corrupted line skipped" in loaded.problems[0]
    assert "cells.jsonl:4: torn last line skipped" in loaded.problems[1]
    assert cells_path.read_bytes() == before


def test_reopen_after_torn_line_keeps_new_cells_separate(results_dir):
    writer = RunWriter.create(results_dir, make_run())
    first = Case(variant="naive", seq_len=64)
    writer.append(cell_for(first, ok_result()))
    writer._cells.write('{"case_id": "half')
    writer._cells.flush()
    writer.close("running")
    writer, loaded = RunWriter.reopen(writer.path)
    second = Case(variant="naive", seq_len=128)
    writer.append(cell_for(second, ok_result()))
    writer.close("finished")
    loaded = load_run(writer.path)
    assert [c.case_id for c in loaded.cells] == [first.id, second.id]
    assert len(loaded.problems) == 1


def test_second_writer_on_the_same_folder_is_refused(results_dir):
    writer = RunWriter.create(results_dir, make_run())
    with pytest.raises(StoreError, match="in use by another attnbench driver"):
        RunWriter.reopen(writer.path)
    assert load_run(writer.path).status == "running"
    writer.close("finished")


def test_running_run_without_a_driver_reads_as_interrupted(results_dir):
    writer = RunWriter.create(results_dir, make_run())
    writer._lock_handle.close()
    assert load_run(writer.path).status == "interrupted"


def test_resolve_by_id_name_path_and_latest(results_dir):
    old = RunWriter.create(results_dir, make_run("alpha", "id-1", "2026-01-01T00:00:00+00:00"))
    new = RunWriter.create(results_dir, make_run("beta", "id-2", "2026-02-01T00:00:00+00:00"))
    for writer in (old, new):
        writer.close("finished")
    assert resolve_run("id-1", results_dir) == old.path
    assert resolve_run("beta", results_dir) == new.path
    assert resolve_run(str(old.path), results_dir) == old.path
    assert resolve_run("latest", results_dir) == new.path
    assert [r.run.run_id for r in list_runs(results_dir)] == ["id-2", "id-1"]
    with pytest.raises(StoreError, match="no run 'gamma'.*known runs include id-2"):
        resolve_run("gamma", results_dir)


@pytest.mark.parametrize("content,needle", [
    (None, "has no run.json"),
    ("", "cannot be read as JSON"),
    ('{"hello": 1}', "is not an attnbench run"),
    ("[1, 2]", "is not an attnbench run"),
])
def test_foreign_or_damaged_run_folders(tmp_path, content, needle):
    folder = tmp_path / "run"
    folder.mkdir()
    if content is not None:
        (folder / "run.json").write_text(content)
    with pytest.raises(StoreError, match=needle):
        load_run(folder)

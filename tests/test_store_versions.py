"""The versioned store: the case-id rule, reference runs of each format version, upgrades and refusals.

tests/data/reference-run-v2/ was written by the real harness at format version 2
(tests/data/README.md says how); reference-run-v1/ is the same run as version 1
wrote it: every case id the sha256 of all of the case's fields, cells without a
format version.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest

from attnbench.core.case import Case
from attnbench.core.errors import StoreError
from attnbench.core.result import Result, Run
from attnbench.store import Cell, RunWriter, load_run, now_iso, tidy_frame
from attnbench.store.format import FORMAT_VERSION, READABLE_VERSIONS, upgrade_cell, upgrade_run

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = {1: DATA / "reference-run-v1", 2: DATA / "reference-run-v2", 3: DATA / "reference-run-v3"}

# Ids of the reference run's cells under the version 2 rule, pinned: an accidental change to
# the rule (or to the canonical JSON) fails here, and would orphan every stored run.
REFERENCE_IDS = {
    ("naive", 64): "afc0d46dd45b8357",
    ("naive", 128): "db84ab5a4a81b421",
    ("sdpa-math", 64): "f4f846ec12f84310",
    ("sdpa-math", 128): "0f5ac6b43c488860",
}


def sha16(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def version_1_id(case: Case) -> str:
    """The rule of format version 1: every field, defaults included."""
    return sha16(case.to_dict())


def cell_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines() if line.strip()]


# --- the id rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("case,identity,expected", [
    (Case(variant="naive", seq_len=128), {"variant": "naive", "seq_len": 128}, "e05b89b9683e77e1"),
    (Case(variant="naive", seq_len=128, kv_len=128, dtype="fp32", qk_std=1), {"variant": "naive", "seq_len": 128},
     "e05b89b9683e77e1"),
    (Case(variant="naive", seq_len=128, kv_len=4096), {"variant": "naive", "seq_len": 128, "kv_len": 4096},
     "34505fbed401d3de"),
    (Case(variant="longformer", seq_len=1024, dtype="bf16", causal=True, params={"window": 256}),
     {"variant": "longformer", "seq_len": 1024, "dtype": "bfloat16", "causal": True, "params": {"window": 256}},
     "ec0dc46f7a926667"),
    (Case(variant="sdpa-math", seq_len=64, heads=2, head_dim=16), {"variant": "sdpa-math", "seq_len": 64,
                                                                   "heads": 2, "head_dim": 16}, "f4f846ec12f84310"),
])
def test_the_id_hashes_only_what_differs_from_the_defaults(case, identity, expected):
    assert case.identity() == identity
    assert case.id == sha16(identity) == expected


def test_qk_std_written_as_an_integer_is_the_same_case():
    assert Case(variant="naive", seq_len=64, qk_std=2).id == Case(variant="naive", seq_len=64, qk_std=2.0).id


def test_config_key_leaves_out_the_lengths_by_the_same_rule():
    short, long, decode = (Case(variant="naive", seq_len=64), Case(variant="naive", seq_len=4096),
                           Case(variant="naive", seq_len=1, kv_len=4096))
    assert short.config_key == long.config_key == decode.config_key == sha16({"variant": "naive"})
    assert Case(variant="naive", seq_len=64, causal=True).config_key == sha16({"variant": "naive", "causal": True})


@dataclass(frozen=True)
class LaterCase(Case):
    """Case as a later attnbench might grow it: a plain default, and one that follows another field."""

    score_mod: str = "none"
    cache_len: int | None = None
    DEFAULTS_FROM = {**Case.DEFAULTS_FROM, "cache_len": "kv_len"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cache_len is None:
            object.__setattr__(self, "cache_len", self.kv_len)


@pytest.mark.parametrize("fields,expected", [
    ({"variant": "naive", "seq_len": 128}, "e05b89b9683e77e1"),
    ({"variant": "sdpa-math", "seq_len": 64, "heads": 2, "head_dim": 16}, "f4f846ec12f84310"),
    ({"variant": "naive", "seq_len": 64, "heads": 2, "head_dim": 16}, "afc0d46dd45b8357"),
])
def test_a_new_field_left_at_its_default_keeps_every_id(fields, expected):
    now, later = Case(**fields), LaterCase(**fields)
    assert now.id == later.id == expected
    assert now.config_key == later.config_key
    assert LaterCase(**fields, cache_len=now.kv_len).id == expected     # explicitly at its default: still the same
    assert version_1_id(now) != version_1_id(later)                     # the old rule changed every id here


def test_a_new_field_away_from_its_default_changes_the_id():
    base = LaterCase(variant="naive", seq_len=128)
    assert LaterCase(variant="naive", seq_len=128, score_mod="softcap:30").id != base.id
    assert LaterCase(variant="naive", seq_len=128, cache_len=4096).id != base.id
    assert LaterCase(variant="naive", seq_len=128, cache_len=4096).identity()["cache_len"] == 4096


# --- the reference runs ------------------------------------------------------------------------


def test_version_1_fixture_is_what_version_1_wrote():
    """The hand-made copy keeps version 1's conventions, so the upgrade path is really exercised."""
    assert json.loads((REFERENCE[1] / "run.json").read_text())["format_version"] == 1
    old, new = cell_lines(REFERENCE[1]), cell_lines(REFERENCE[2])
    assert len(old) == len(new) == 4
    for v1, v2 in zip(old, new, strict=True):
        assert "format_version" not in v1 and v2["format_version"] == 2
        # version 1 hashed every field the case had then, which is exactly the stored case dict
        assert v1["case_id"] == sha16(v1["case"]) != v2["case_id"]
        assert {k: v for k, v in v1.items() if k != "case_id"} == {
            k: v for k, v in v2.items() if k not in ("case_id", "format_version")}


@pytest.mark.parametrize("version", sorted(REFERENCE))
def test_reference_run_loads_at_the_current_version(version):
    loaded = load_run(REFERENCE[version])
    assert loaded.problems == () and loaded.status == "finished"
    assert loaded.run.format_version == FORMAT_VERSION
    assert {(c.case["variant"], c.case["seq_len"]): c.case_id for c in loaded.cells} == REFERENCE_IDS
    for cell in loaded.cells:
        assert cell.case_id == Case.from_dict(cell.case).id
        timing = cell.result.timing
        assert cell.result.status == "ok" and len(timing.samples_s) >= 3
        assert timing.median_s == statistics.median(timing.samples_s)
    frame = tidy_frame([loaded])
    assert sorted(frame.case_id) == sorted(REFERENCE_IDS.values())
    assert (frame.time_median_s > 0).all() and (frame.max_abs_error < 1e-5).all()
    assert frame.max_rel_error.isna().all()            # not measured then: empty, never a made-up number


def test_a_verdict_from_the_absolute_bounds_keeps_loading_as_it_was_judged():
    """Version 3 cells judged before the bounds were scale-free keep their verdict and the bounds used."""
    loaded = load_run(REFERENCE[3])
    for cell in loaded.cells:
        accuracy = cell.result.accuracy
        assert accuracy.ok is True and accuracy.failures == ()
        assert accuracy.tolerance == {"dtype": "float32", "rel_l2": 5e-06, "max_abs": 2e-05, "grad_rel_l2": 5e-06,
                                      "grad_max_abs": 5e-05}
        assert accuracy.output.max_rel_error is None and accuracy.output.max_abs_error < 1e-6
    assert (tidy_frame([loaded]).accuracy_ok == True).all()  # noqa: E712


@pytest.mark.parametrize("base,new", [(2, 2), (1, 1), (1, 2)])
def test_reference_runs_compare_cell_for_cell_across_versions(base, new):
    from attnbench.report.compare import compare_runs

    comparison = compare_runs(load_run(REFERENCE[base]), load_run(REFERENCE[new]))
    assert sorted(c.case_id for c in comparison.cells) == sorted(REFERENCE_IDS.values())
    assert comparison.only_base == [] and comparison.only_new == []
    assert all(c.ratio == pytest.approx(1.0) for c in comparison.cells)


def test_pytest_benchmark_export_of_an_upgraded_run_uses_the_current_ids():
    from attnbench.store.pytest_benchmark import to_pytest_benchmark

    document = to_pytest_benchmark(load_run(REFERENCE[1]))
    assert sorted(b["extra_info"]["case_id"] for b in document["benchmarks"]) == sorted(REFERENCE_IDS.values())


class RecordingExecutor:
    """Runs nothing: says which cases the driver asked for and gives each an 'ok'."""

    remote = False

    def __init__(self) -> None:
        self.asked: list[Case] = []

    def map(self, cases, settings, on_start=None, on_progress=None):
        for case in cases:
            self.asked.append(case)
            if on_start is not None:
                on_start(case)
            yield case, Result("ok", started_at=now_iso())

    def available_memory(self, device):
        return None

    def close(self) -> None:
        pass


def interrupted_copy(version: int, tmp_path: Path, seq_lens: str) -> Path:
    folder = tmp_path / f"copy-v{version}"
    shutil.copytree(REFERENCE[version], folder)
    run_json = folder / "run.json"
    data = json.loads(run_json.read_text())
    assert "seq_len = [64, 128]" in data["suite_text"]
    data["suite_text"] = data["suite_text"].replace("seq_len = [64, 128]", f"seq_len = {seq_lens}")
    data.update(status="interrupted", ended_at=None)
    run_json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return folder


@pytest.mark.parametrize("version", sorted(REFERENCE))
@pytest.mark.parametrize("seq_lens,new_cells", [("[64, 128]", []), ("[64, 128, 256]", [("naive", 256),
                                                                                    ("sdpa-math", 256)])])
def test_resuming_a_reference_run_runs_no_stored_cell_again(version, seq_lens, new_cells, tmp_path):
    from attnbench.core.registry import default_registry
    from attnbench.engine.sweep import resume_run

    folder = interrupted_copy(version, tmp_path, seq_lens)
    before = (folder / "cells.jsonl").read_bytes()
    executor = RecordingExecutor()
    outcome = resume_run(folder, default_registry(), executor=executor)
    assert outcome.status == "finished" and outcome.skipped_as_done == 4
    assert [(c.variant, c.seq_len) for c in executor.asked] == new_cells
    after = (folder / "cells.jsonl").read_bytes()
    assert after.startswith(before)                                     # stored lines are never rewritten
    lines = cell_lines(folder)
    assert len(lines) == 4 + len(new_cells)
    assert all(line["format_version"] == FORMAT_VERSION for line in lines[4:])
    loaded = load_run(folder)
    assert loaded.problems == () and loaded.status == "finished"
    assert len(loaded.case_ids()) == len(lines)                          # nothing stored twice
    assert set(REFERENCE_IDS.values()) <= loaded.case_ids()
    assert json.loads((folder / "run.json").read_text())["format_version"] == FORMAT_VERSION
    again = RecordingExecutor()
    resume_run(folder, default_registry(), executor=again)               # a resumed mixed folder resumes too
    assert again.asked == [] and len(cell_lines(folder)) == len(lines)


# --- writing and refusing ----------------------------------------------------------------------


def test_new_runs_and_cells_are_written_at_the_current_version(tmp_path):
    assert Run(run_id="r", name="r", suite_name="s", suite_text="", started_at="").format_version == FORMAT_VERSION
    writer = RunWriter.create(tmp_path, Run(run_id="r", name="r", suite_name="s", suite_text="x",
                                            started_at=now_iso(), format_version=1))
    case = Case(variant="naive", seq_len=64)
    writer.append(Cell(case_id=case.id, case=case.to_dict(), result=Result("ok")))
    writer.close("finished")
    assert json.loads((writer.path / "run.json").read_text())["format_version"] == FORMAT_VERSION
    assert [line["format_version"] for line in cell_lines(writer.path)] == [FORMAT_VERSION]


def test_a_run_from_a_newer_attnbench_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "newer"
    shutil.copytree(REFERENCE[2], folder)
    data = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**data, "format_version": 999}))
    readable = ", ".join(str(v) for v in READABLE_VERSIONS)
    with pytest.raises(StoreError) as refused:
        load_run(folder)
    message = str(refused.value)
    assert str(folder / "run.json") in message and "store format version 999" in message
    assert f"reads versions {readable}" in message and "upgrade attnbench" in message
    with pytest.raises(StoreError, match="format version 999"):
        RunWriter.reopen(folder)
    with pytest.raises(StoreError, match="format version 999"):              # the lock was let go
        RunWriter.reopen(folder)


def test_a_cell_line_from_a_newer_attnbench_is_refused_not_skipped(tmp_path):
    folder = tmp_path / "newer-cell"
    shutil.copytree(REFERENCE[2], folder)
    lines = (folder / "cells.jsonl").read_text().splitlines()
    newer = {**json.loads(lines[1]), "format_version": FORMAT_VERSION + 1}
    lines[1] = json.dumps(newer)
    (folder / "cells.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=rf"cells\.jsonl:2 has store format version {FORMAT_VERSION + 1}.*upgrade attnbench"):
        load_run(folder)


@pytest.mark.parametrize("version", [0, -1, "2", True, None])
def test_a_version_no_attnbench_wrote_is_called_damaged(version):
    with pytest.raises(StoreError, match="may be damaged"):
        upgrade_run({"run_id": "r", "format_version": version}, "somewhere/run.json")


def test_upgrade_steps_bring_old_records_to_the_current_version():
    assert upgrade_run({"run_id": "r"})["format_version"] == FORMAT_VERSION      # before run.json had a version
    case = Case(variant="naive", seq_len=64, heads=2, head_dim=16)
    record = {"case_id": version_1_id(case), "case": case.to_dict(), "result": {"status": "ok"}}
    upgraded = upgrade_cell(record)
    assert upgraded["case_id"] == case.id == REFERENCE_IDS[("naive", 64)]
    assert upgraded["format_version"] == FORMAT_VERSION and record["case_id"] == version_1_id(case)
    current = {**record, "case_id": "kept-as-stored", "format_version": FORMAT_VERSION}
    assert upgrade_cell(current)["case_id"] == "kept-as-stored"


def test_a_version_1_cell_whose_case_cannot_be_read_is_reported_and_skipped(tmp_path):
    folder = tmp_path / "bad-case"
    shutil.copytree(REFERENCE[1], folder)
    lines = (folder / "cells.jsonl").read_text().splitlines()
    broken = json.loads(lines[0])
    broken["case"]["seq_len"] = 0
    lines[0] = json.dumps(broken)
    (folder / "cells.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_run(folder)
    assert len(loaded.cells) == 3 and len(loaded.problems) == 1
    assert "cells.jsonl:1: corrupted line skipped" in loaded.problems[0]
    assert "id cannot be recomputed" in loaded.problems[0]


def test_version_2_min_max_interval_of_3_samples_is_dropped_and_fwd_bwd_flops_rescaled():
    lines = cell_lines(REFERENCE[2])
    record = json.loads(json.dumps(lines[0]))
    record["result"]["timing"]["samples_s"] = [1.0, 2.0, 3.0]
    record["result"]["timing"]["ci_low_s"], record["result"]["timing"]["ci_high_s"] = 1.0, 3.0
    record["case"]["mode"] = "fwd_bwd"
    record["result"]["flops"], record["result"]["flops_per_s"] = 3000, 1500.0
    upgraded = upgrade_cell(record)
    timing = upgraded["result"]["timing"]
    assert timing["ci_low_s"] is None and timing["ci_high_s"] is None
    assert upgraded["result"]["flops"] == 3500 and upgraded["result"]["flops_per_s"] == pytest.approx(1750.0)
    many = json.loads(json.dumps(lines[0]))
    many["result"]["timing"]["samples_s"] = [1.0] * 6
    many["result"]["timing"]["ci_low_s"] = many["result"]["timing"]["ci_high_s"] = 1.0
    kept = upgrade_cell(many)["result"]
    assert kept["timing"]["ci_low_s"] == 1.0 and kept["flops"] == lines[0]["result"]["flops"]


def test_version_3_reference_run_has_the_new_fields():
    lines = cell_lines(REFERENCE[3])
    assert [line["format_version"] for line in lines] == [3] * 4
    for line in lines:
        result = line["result"]
        assert result["accuracy"]["ok"] is True and result["timing"]["contended"] is False
        assert result["memory"]["method"] == "torch-profiler-cpu-allocated"
        timing = result["timing"]
        assert (timing["ci_low_s"] is None) == (len(timing["samples_s"]) < 6)

"""`attnbench compare`: verdicts, gates and the comparison page, from synthetic runs with known numbers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_runs import (
    HOSTILE_VARIANT,
    spec_with,
    variants_with_hostile,
    write_synthetic_run,
)

from attnbench.cli.report import compare_command
from attnbench.core.errors import StoreError
from attnbench.report.compare import compare_runs, environment_diff
from attnbench.report.gates import gate_failures, parse_gate
from attnbench.report.significance import mann_whitney_u, median_ratio_interval
from attnbench.store import load_run

SEQ_LENS = (256, 512, 1024)


def build_compare_runs(results_dir: Path) -> dict[str, Path]:
    """BASE; SAME (same distribution, other noise); SLOW (every time ×1.2); and runs that change
    memory, error, the environment and the set of cells."""
    common = {"seq_lens": SEQ_LENS, "variants": variants_with_hostile(), "attention_maps": False, "processes": 3}
    return {
        "base": write_synthetic_run(results_dir, spec_with(name="base", seed=1, **common)),
        "same": write_synthetic_run(results_dir, spec_with(name="same", seed=2, **common)),
        "slow": write_synthetic_run(results_dir, spec_with(name="slow", seed=3, slowdown=1.2, **common)),
        "fatter": write_synthetic_run(results_dir, spec_with(
            name="fatter", seed=4, memory_scale=1.3, error_scale=3.0,
            environment={"torch": "2.5.0", "cpu_model": "Synthetic CPU", "threads": 4,
                         "packages": {"numpy": "2.0"}},
            **{**common, "seq_lens": (*SEQ_LENS, 2048)})),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_compare_runs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def loaded(runs):
    return {name: load_run(path) for name, path in runs.items()}


def test_a_twenty_percent_slowdown_is_slower_everywhere(loaded):
    comparison = compare_runs(loaded["base"], loaded["slow"])
    measured = [c for c in comparison.cells if c.base_status == "ok"]
    assert measured and all(c.verdict == "slower" for c in measured)
    for cell in measured:
        assert cell.ratio == pytest.approx(1.2, rel=0.02)
        assert cell.ratio_low < 1.2 < cell.ratio_high
        assert cell.ratio_low == pytest.approx(min(cell.new_processes) / max(cell.base_processes))
        assert 1.0 < cell.ratio_low and "process range" in cell.evidence
    not_run = [c for c in comparison.cells if c.base_status != "ok"]
    assert {c.verdict for c in not_run} == {"n/a"}
    assert any("oom" in c.status_note or "unsupported" in c.status_note for c in not_run)


def test_runs_from_the_same_distribution_get_no_verdict(loaded):
    comparison = compare_runs(loaded["base"], loaded["same"])
    verdicts = {c.verdict for c in comparison.cells}
    assert "slower" not in verdicts and "faster" not in verdicts
    assert comparison.counts()["same"] > 0
    assert not gate_failures(comparison, [parse_gate("median:5%"), parse_gate("peak_memory:1%"),
                                          parse_gate("error:1%")])


def test_faster_is_the_mirror_of_slower(loaded):
    comparison = compare_runs(loaded["slow"], loaded["base"])
    assert {c.verdict for c in comparison.cells if c.base_status == "ok"} == {"faster"}


def test_threshold_decides_what_counts(loaded):
    comparison = compare_runs(loaded["base"], loaded["slow"], threshold=0.25)
    assert "slower" not in {c.verdict for c in comparison.cells}


def test_memory_error_environment_and_unmatched_cells(loaded):
    comparison = compare_runs(loaded["base"], loaded["fatter"])
    measured = [c for c in comparison.cells if c.base_status == "ok"]
    assert all(c.memory_ratio == pytest.approx(1.3, rel=1e-3) for c in measured)
    assert all(c.error_ratio == pytest.approx(3.0, rel=1e-6) for c in measured)
    assert {item["seq_len"] for item in comparison.only_new} == {2048}
    assert comparison.only_base == []
    keys = {key for key, _, _ in comparison.environment_diff}
    assert keys == {"torch", "threads"}
    failures = gate_failures(comparison, [parse_gate("peak_memory:20%"), parse_gate("error:100%"),
                                          parse_gate("median:5%")])
    assert any(line.startswith("peak_memory:20%: sdpa-flash at seq_len 256") for line in failures)
    assert any(line.startswith("error:100%: performer (features=64) at seq_len 1024") for line in failures)
    assert not any(line.startswith("median") for line in failures)
    assert not gate_failures(comparison, [parse_gate("peak_memory:40%")])


def test_environment_diff_flattens_nested_keys():
    diff = environment_diff({"a": 1, "p": {"x": "1", "y": "2"}}, {"a": 1, "p": {"x": "1", "y": "3"}, "b": True})
    assert diff == [("b", "(absent)", "True"), ("p.y", "2", "3")]


@pytest.mark.parametrize(("text", "field", "fraction"), [
    ("median:5%", "median", 0.05), ("median:5", "median", 0.05), ("peak_memory:12.5%", "peak_memory", 0.125),
    ("error: 100 %", "error", 1.0),
])
def test_parse_gate(text, field, fraction):
    gate = parse_gate(text)
    assert gate.field == field and gate.fraction == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["speed:5%", "median", "median:-5%", "median:five", ":5%"])
def test_parse_gate_rejects_and_names_the_fields(text):
    with pytest.raises(ValueError, match="median, peak_memory, error"):
        parse_gate(text)


def test_u_test_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(7)
    for shift in (0.0, 0.02, 0.1):
        first = np.round(rng.normal(1.0, 0.05, 40), 3)        # rounded: ties
        second = np.round(rng.normal(1.0 + shift, 0.05, 33), 3)
        ours = mann_whitney_u(first, second)
        theirs = stats.mannwhitneyu(first, second, alternative="two-sided", method="asymptotic")
        assert ours.u == pytest.approx(theirs.statistic)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)


def test_bootstrap_interval_is_seeded_and_covers_the_ratio():
    rng = np.random.default_rng(0)
    base, new = rng.normal(1.0, 0.01, 51), rng.normal(1.1, 0.01, 51)
    first, second = median_ratio_interval(base, new), median_ratio_interval(base, new)
    assert first == second
    assert first.low < first.ratio < first.high
    assert first.ratio == pytest.approx(1.1, rel=0.01)


def test_fail_on_median_exits_1_naming_the_cells(runs):
    results = str(runs["base"].parent)
    result = CliRunner().invoke(compare_command, ["base", "slow", "--fail-on", "median:5%", "--results", results])
    assert result.exit_code == 1, result.output
    assert "regression(s) beyond median:5%" in result.output
    assert re.search(r"median:5%: sdpa-flash at seq_len 1024 \(float32 · fwd · non-causal · head_dim=64; "
                     r"sdpa-flash-cpu-float32-full-fwd-B1H8N1024d64\): median \+20\.\d%", result.output)
    assert "performer (features=256) at seq_len 512" in result.output


def test_fail_on_passes_when_nothing_regressed(runs, tmp_path):
    results = str(runs["base"].parent)
    output = tmp_path / "cmp.html"
    result = CliRunner().invoke(compare_command, ["base", "same", "--fail-on", "median:5%", "--fail-on",
                                                  "peak_memory:5%", "-o", str(output), "--results", results])
    assert result.exit_code == 0, result.output
    assert "gates passed: median:5%, peak_memory:5%" in result.output
    html = output.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE_VARIANT not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert re.search(r'<img[^>]*src="data:image/png;base64,', html)


def test_bad_fail_on_is_a_usage_error(runs):
    result = CliRunner().invoke(compare_command, ["base", "slow", "--fail-on", "speed:5%",
                                                  "--results", str(runs["base"].parent)])
    assert result.exit_code == 2
    assert "unknown field 'speed'" in result.output and "median, peak_memory, error" in result.output


def test_unknown_run_is_a_store_error(runs):
    result = CliRunner().invoke(compare_command, ["base", "nope", "--results", str(runs["base"].parent)])
    assert isinstance(result.exception, StoreError)


def test_compare_page_shows_the_environment_difference(runs, tmp_path):
    output = tmp_path / "fatter.html"
    result = CliRunner().invoke(compare_command, ["base", "fatter", "-o", str(output), "--fail-on", "peak_memory:10",
                                                  "--results", str(runs["base"].parent)])
    assert result.exit_code == 1
    html = output.read_text(encoding="utf-8")
    env = re.search(r'<section id="environment">(.*?)</section>', html, re.S).group(1)
    assert "<th>torch</th><td>2.4.0</td><td>2.5.0</td>" in env
    assert "only in NEW (" in html and 'class="gate-fail"' in html


def test_attnbench_compare_exit_statuses(runs):
    results = str(runs["base"].parent)

    def attnbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "attnbench.cli", *args, "--results", results],
                              capture_output=True, text=True, timeout=120)

    slow = attnbench("compare", "base", "slow", "--fail-on", "median:5%")
    assert slow.returncode == 1, slow.stderr
    assert "median:5%: sdpa-flash at seq_len 256" in slow.stderr
    bad = attnbench("compare", "base", "slow", "--fail-on", "median:lots")
    assert bad.returncode == 2 and "median:lots" in bad.stderr
    missing = attnbench("compare", "base", "no-such-run")
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr


def test_two_copies_of_one_run_keep_their_own_numbers(results_dir: Path):
    """Copies share a run id; BASE's numbers must still come from BASE's folder, NEW's from NEW's."""
    import json
    import shutil

    original = write_synthetic_run(results_dir, spec_with(name="copied", seed=5, seq_lens=(256,), attention_maps=False))
    copy = results_dir / "copy-of-run"
    shutil.copytree(original, copy)
    lines = (copy / "cells.jsonl").read_text().splitlines()
    doubled = []
    for line in lines:
        record = json.loads(line)
        timing, memory = record["result"].get("timing"), record["result"].get("memory")
        if timing:
            timing["samples_s"] = [2 * s for s in timing["samples_s"]]
            timing["median_s"] *= 2
        if memory and memory.get("peak_bytes_fwd"):
            memory["peak_bytes_fwd"] *= 2
        doubled.append(json.dumps(record, sort_keys=True))
    (copy / "cells.jsonl").write_text("\n".join(doubled) + "\n")
    base, new = load_run(original), load_run(copy)
    assert base.run.run_id == new.run.run_id
    comparison = compare_runs(base, new)
    timed = [c for c in comparison.cells if c.base_median is not None]
    assert timed
    for cell in timed:
        assert cell.new_median == pytest.approx(2 * cell.base_median)
        assert cell.ratio == pytest.approx(2.0)
        if cell.base_memory:
            assert cell.memory_ratio == pytest.approx(2.0)


def test_one_process_per_side_is_not_trusted_and_gates_only_beyond_the_process_spread(results_dir: Path):
    """Samples of one process share its luck: a 20% change is shown, not judged; a 2× change still fails."""
    from attnbench.report.gates import PROCESS_SPREAD, ungated

    common = {"seq_lens": (256, 512), "attention_maps": False}
    base = load_run(write_synthetic_run(results_dir, spec_with(name="one-base", seed=1, **common)))
    slow = load_run(write_synthetic_run(results_dir, spec_with(name="one-slow", seed=2, slowdown=1.2, **common)))
    double = load_run(write_synthetic_run(results_dir, spec_with(name="one-2x", seed=3, slowdown=2.0, **common)))
    comparison = compare_runs(base, slow)
    timed = [c for c in comparison.cells if c.base_status == "ok"]
    assert timed and {c.verdict for c in timed} == {"one process"}
    assert all(c.ratio == pytest.approx(1.2, rel=0.02) and "run --processes 3" in c.evidence for c in timed)
    assert all(c.p_value is not None and c.p_value < 1e-6 for c in timed)   # shown, but not a verdict
    gates = [parse_gate("median:5%")]
    assert gate_failures(comparison, gates) == []
    assert any(f"×{PROCESS_SPREAD:.2f}" in line for line in ungated(comparison, gates))
    failures = gate_failures(compare_runs(base, double), gates)
    assert len(failures) == len(timed) and all("one process per side, and beyond 1.05 × 1.52" in f for f in failures)


def test_processes_that_overlap_are_the_same_and_a_measured_spread_sets_the_one_process_band(results_dir: Path):
    common = {"seq_lens": (256, 512), "attention_maps": False}
    noisy = {"processes": 3, "process_noise": 0.15, **common}
    base = load_run(write_synthetic_run(results_dir, spec_with(name="p-base", seed=1, **noisy)))
    same = load_run(write_synthetic_run(results_dir, spec_with(name="p-same", seed=2, **noisy)))
    comparison = compare_runs(base, same)
    timed = [c for c in comparison.cells if c.base_status == "ok"]
    assert {c.verdict for c in timed} == {"same"}
    assert all(c.ratio_low < 1 < c.ratio_high for c in timed)
    assert gate_failures(comparison, [parse_gate("median:5%")]) == []
    # BASE measured its process spread; NEW ran one process: the band is the measured spread, not the default
    single = load_run(write_synthetic_run(results_dir, spec_with(name="p-single", seed=4, slowdown=1.9, **common)))
    mixed = compare_runs(base, single)
    spread = max(max(c.base_processes) / min(c.base_processes) for c in mixed.cells if len(c.base_processes) > 1)
    lines = gate_failures(mixed, [parse_gate("median:5%")])
    expected = [c for c in mixed.cells if c.ratio is not None and c.ratio > 1.05 * spread]
    assert len(lines) == len(expected) and all(f"1.05 × {spread:.2f}" in line for line in lines)

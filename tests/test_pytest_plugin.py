"""The `attention_benchmark` fixture, run by pytest itself (pytester) and read back from pytest-benchmark's files."""

from __future__ import annotations

import json
import statistics

import pytest

from attnbench.core.case import Case

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.e2e

TINY = 'measure={"warmup_s": 0.01, "budget_s": 0.1, "min_reps": 3}'

BENCHMARKS = f"""
import os

import pytest


@pytest.mark.parametrize("variant", ["naive", "sdpa-math"])
def test_attention(attention_benchmark, variant):
    result = attention_benchmark(variant=variant, seq_len=int(os.environ.get("SEQ_LEN", "128")), heads=2,
                                 head_dim=32, causal=True, {TINY})
    assert result.status == "ok"
    assert result.accuracy.output.rel_l2_error < 1e-5


def test_unknown_knob_is_skipped(attention_benchmark):
    attention_benchmark(variant="naive", seq_len=64, params={{"window": 8}}, {TINY})


def test_missing_variant_fails(attention_benchmark):
    attention_benchmark(variant="no-such-variant", seq_len=64, {TINY})
"""


def test_fixture_records_harness_samples_into_pytest_benchmark_json(pytester):
    pytester.makepyfile(test_bench=BENCHMARKS)
    outcome = pytester.runpytest_subprocess("--benchmark-json=out.json", "-p", "no:cacheprovider", "-rs")
    outcome.assert_outcomes(passed=2, skipped=1, failed=1)
    outcome.stdout.fnmatch_lines(["*no-such-variant-cpu-*: error: variant *no-such-variant* is not available in the worker*",
                                  "SKIPPED*naive-cpu-*-window8: has no knob window*"])

    data = json.loads((pytester.path / "out.json").read_text())
    assert {"machine_info", "commit_info", "datetime", "version", "benchmarks"} <= set(data)
    benchmarks = {b["name"]: b for b in data["benchmarks"]}
    assert sorted(benchmarks) == ["test_attention[naive]", "test_attention[sdpa-math]"]
    for variant in ("naive", "sdpa-math"):
        bench = benchmarks[f"test_attention[{variant}]"]
        case = Case(variant=variant, seq_len=128, heads=2, head_dim=32, causal=True)
        stats, info = bench["stats"], bench["extra_info"]
        samples = stats["data"]
        assert stats["rounds"] == len(samples) >= 3
        assert stats["median"] == pytest.approx(statistics.median(samples), rel=1e-12)
        assert stats["min"] == min(samples) > 0
        assert stats["iterations"] == info["calls_per_sample"] >= 1
        assert bench["group"] == "attention cpu float32 causal fwd B1H2N128d32"
        assert bench["options"]["timer"] == "attnbench:cpu-perf-counter"
        assert bench["params"] == {"variant": variant}
        assert info["case_id"] == case.id
        assert info["attnbench_case"] == case.to_dict()
        assert info["rel_l2_error"] < 1e-5
        assert info["peak_bytes_fwd"] > 0
        assert info["setup_s"] > 0                       # setup kept apart from the samples
        # one count per function: naive's full N×M products are its performed_flops, not its flops
        assert info["flops"] == 4 * 1 * 2 * (128 * 129 // 2) * 32


def test_autosave_and_compare_fail_work_as_usual(pytester, monkeypatch):
    pytester.makepyfile(test_bench=BENCHMARKS)
    storage = f"file://{pytester.path / 'bench'}"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")       # no thread contention on a busy machine
    monkeypatch.setenv("SEQ_LEN", "64")
    first = pytester.runpytest_subprocess("-k", "test_attention", "--benchmark-autosave",
                                          f"--benchmark-storage={storage}", "-p", "no:cacheprovider")
    first.assert_outcomes(passed=2)
    (saved,) = (pytester.path / "bench").rglob("0001_*.json")
    assert len(json.loads(saved.read_text())["benchmarks"]) == 2

    # 16x the length is ~256x the work: pytest-benchmark's own gate must see the regression.
    monkeypatch.setenv("SEQ_LEN", "1024")
    second = pytester.runpytest_subprocess("-k", "test_attention", "--benchmark-compare=0001",
                                           "--benchmark-compare-fail=median:50%",
                                           f"--benchmark-storage={storage}", "-p", "no:cacheprovider")
    assert second.ret == 1
    second.stderr.fnmatch_lines(["*Comparing against benchmarks from*0001_*",
                                 "*Performance has regressed*",
                                 "*test_attention?naive? (0001*) - Field 'median' has failed PercentageRegressionCheck*"])


def test_benchmark_disable_runs_once_and_records_nothing(pytester):
    pytester.makepyfile(test_bench=BENCHMARKS)
    outcome = pytester.runpytest_subprocess("-k", "naive and test_attention", "--benchmark-disable",
                                            "--benchmark-json=out.json", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1)                  # the test's own accuracy assertion ran
    assert not (pytester.path / "out.json").exists()
    assert "benchmark 'attention" not in outcome.stdout.str()

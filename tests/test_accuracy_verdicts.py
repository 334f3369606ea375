"""Accuracy verdicts: every cell's error is judged against its variant's declared tolerance for the dtype.

A planted plugin whose output is exact softmax attention times 1.01 (rel_l2 1e-2,
finite, deterministic) must be stored ``accuracy_ok = False`` with a sentence
naming the metric and the bound, and be shown as inaccurate by the end-of-run
summary, ``attnbench show`` and the HTML report; exact kernels pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from plugin_fixtures import write_faulty_plugins
from safetensors.torch import save_file
from tiny_suites import tiny_suite

from attnbench import DEFAULT_TOLERANCES, Case, Tolerance, Variant
from attnbench.core.registry import load_registry
from attnbench.core.result import ErrorMetrics
from attnbench.core.settings import MeasureSettings
from attnbench.measure.accuracy import error_metrics, judge
from attnbench.measure.cell import measure_case
from attnbench.plan.suite import expand, load_suite, with_overrides
from attnbench.store import load_run, tidy_frame

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.05, min_reps=3, memory=False, telemetry=False)
ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]


def small_case(variant: str, **fields) -> Case:
    return Case(variant=variant, **{"seq_len": 64, "heads": 2, "head_dim": 32, "qk_std": 0.5, **fields})


# --- the tolerance table -------------------------------------------------------------------------


def test_exact_kernels_share_the_default_tolerance_of_each_dtype():
    registry = load_registry()
    for name in ("naive", "sdpa-math", "sdpa-flash", "flash-tiled", "flex", "longformer"):
        variant = registry.get(name)
        for dtype in variant.dtypes:
            assert variant.tolerance(small_case(name, dtype=dtype)) is DEFAULT_TOLERANCES[dtype], (name, dtype)
    f32 = DEFAULT_TOLERANCES["float32"]
    assert f32.rel_l2 < 1e-4 < 1e-2, "a 1% error must fail float32"
    assert DEFAULT_TOLERANCES["float16"].rel_l2 < 1e-2
    assert (DEFAULT_TOLERANCES["float64"].rel_l2 < f32.rel_l2 < DEFAULT_TOLERANCES["float16"].rel_l2
            < DEFAULT_TOLERANCES["bfloat16"].rel_l2)


def test_looser_kernels_override_only_the_dtypes_they_declare():
    registry = load_registry()
    ssd = registry.get("mamba2-ssd")
    assert ssd.tolerance(small_case("mamba2-ssd", dtype="bfloat16")).rel_l2 > DEFAULT_TOLERANCES["bfloat16"].rel_l2
    assert ssd.tolerance(small_case("mamba2-ssd", dtype="float32")) is DEFAULT_TOLERANCES["float32"]
    additive = registry.get("additive").tolerance(small_case("additive", dtype="bfloat16"))
    assert additive.rel_l2 == DEFAULT_TOLERANCES["bfloat16"].rel_l2
    assert additive.grad_rel_l2 > DEFAULT_TOLERANCES["bfloat16"].grad_rel_l2
    # luong-concat inherits the tanh scorer's bounds (first in its MRO), not _Luong's
    concat = registry.get("luong-concat").tolerance(small_case("luong-concat", dtype="bfloat16"))
    assert concat == additive


def test_a_plugin_declares_tolerances_per_dtype_merged_over_its_base():
    class Loose(Variant):
        name = "loose"
        tolerances = {"bfloat16": Tolerance(rel_l2=0.1, max_rel=1.0), "float64": None}

    assert Loose().tolerance(small_case("loose", dtype="bfloat16")) == Tolerance(rel_l2=0.1, max_rel=1.0)
    assert Loose().tolerance(small_case("loose", dtype="float32")) is DEFAULT_TOLERANCES["float32"]
    assert Loose().tolerance(small_case("loose", dtype="float64")) is None
    with pytest.raises(TypeError, match="unknown dtype 'fp8'"):
        type("Bad", (Variant,), {"tolerances": {"fp8": Tolerance(1e-2, 1e-2)}})
    with pytest.raises(TypeError, match="must be a Tolerance"):
        type("Bad", (Variant,), {"tolerances": {"float32": 1e-5}})
    with pytest.raises(ValueError, match="non-negative"):
        Tolerance(rel_l2=-1.0, max_rel=1.0)
    with pytest.raises(TypeError, match=r"absolute bounds, which attnbench no longer reads: declare max_rel"):
        Tolerance(rel_l2=1e-2, max_abs=1e-2)


def test_judge_names_the_metric_the_error_and_the_bound():
    bound = Tolerance(rel_l2=5e-6, max_rel=2e-5, grad_rel_l2=5e-6, grad_max_rel=None)
    ok, used, failures = judge(ErrorMetrics(1e-6, 1e-2, 0, 1e-6), {"q": ErrorMetrics(1.0, 1e-7, 0, 1.0)}, bound,
                               dtype="float32", variant="naive")
    assert ok is False
    assert failures == ("output rel_l2 1.0e-02 > 5.0e-06 (float32 tolerance of naive)",)
    assert used == {"dtype": "float32", "rel_l2": 5e-6, "max_rel": 2e-5, "grad_rel_l2": 5e-6, "grad_max_rel": None}
    # the absolute error is not judged, its size relative to the reference is
    assert judge(ErrorMetrics(3.0, 1e-7, 0, 1e-6), {}, bound, dtype="float32", variant="naive")[:2] == (True, used)
    ok, _, failures = judge(ErrorMetrics(1e-9, 1e-7, 0, 3e-5), {}, bound, dtype="float32", variant="naive")
    assert ok is False and failures == ("output max_rel 3.0e-05 > 2.0e-05 (float32 tolerance of naive)",)
    # no bound: not judged, unless the values are not finite
    assert judge(ErrorMetrics(1.0, 1.0, 0), {}, None, dtype="float32", variant="x") == (None, {}, ())
    ok, _, failures = judge(ErrorMetrics(float("inf"), float("inf"), 3), {}, None, dtype="float32", variant="x")
    assert ok is False and failures == ("output has 3 non-finite values (NaN or inf)",)


# --- verdicts of measured cells --------------------------------------------------------------------


def test_a_one_percent_high_plugin_is_inaccurate_and_naive_is_not(faulty_registry):
    for mode in ("fwd", "fwd_bwd"):
        planted = measure_case(small_case("fault-scaled", mode=mode), faulty_registry.get("fault-scaled"), FAST)
        assert planted.status == "ok", planted.reason
        accuracy = planted.accuracy
        assert accuracy.output.rel_l2_error == pytest.approx(1e-2, rel=1e-3)
        assert accuracy.ok is False
        assert accuracy.tolerance["dtype"] == "float32"
        assert accuracy.tolerance["rel_l2"] == DEFAULT_TOLERANCES["float32"].rel_l2
        assert re.fullmatch(r"output rel_l2 1\.0e-02 > 5\.0e-06 \(float32 tolerance of fault-scaled\)",
                            accuracy.failures[0]), accuracy.failures
        assert "output max_rel 1.0e-02 > 2.0e-05 (float32 tolerance of fault-scaled)" in accuracy.failures
        if mode == "fwd_bwd":   # the gradients of a scaled output are scaled too
            assert any(f.startswith("dv rel_l2 1.0e-02") for f in accuracy.failures), accuracy.failures
            assert any(f.startswith("dv max_rel 1.0e-02") for f in accuracy.failures), accuracy.failures

        naive = measure_case(small_case("naive", mode=mode), faulty_registry.get("naive"), FAST)
        assert naive.accuracy.ok is True and naive.accuracy.failures == ()


def test_error_metrics_are_relative_to_the_reference():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 3, 40, 8, generator=generator, dtype=torch.float64)
    noise = torch.randn(reference.shape, generator=generator, dtype=torch.float64) * 1e-6
    for scale in (1e-3, 1.0, 1e4):
        metrics = error_metrics((reference + noise) * scale, reference * scale)
        assert metrics.max_abs_error == pytest.approx(float(noise.abs().max()) * scale, rel=1e-6)
        assert metrics.max_rel_error == pytest.approx(float(noise.abs().max() / reference.abs().max()), rel=1e-6)
        assert metrics.rel_l2_error == pytest.approx(float(noise.norm() / reference.norm()), rel=1e-6)
    assert error_metrics(reference * 1.01, reference).max_rel_error == pytest.approx(1e-2)
    zero = torch.zeros(3)
    assert error_metrics(zero, zero).max_rel_error == 0.0
    assert error_metrics(zero + 1e-9, zero).max_rel_error == float("inf")


def write_inputs(path: Path, value_scale: float) -> Path:
    """q, k ~ N(0, 0.5²) and v ~ N(0, value_scale²) of shape (1, 4, 128, 32), as `attnbench capture` would store them."""
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, 128, 32, generator=generator) for _ in range(3))
    save_file({"q": q * 0.5, "k": k * 0.5, "v": v * value_scale}, str(path))
    return path


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_the_verdict_does_not_change_with_the_scale_of_the_values(tmp_path, faulty_registry, mode):
    """Values 1000x larger (a real model's activations are not N(0, 1)): naive stays accurate, a 1% error does not.

    An absolute bound (float32 max_abs 2e-5, before) called naive inaccurate here: its absolute
    error grows with the values while its error relative to the reference's scale does not.
    """
    for scale in (1.0, 1e3):
        path = write_inputs(tmp_path / f"values-{scale:g}.safetensors", scale)
        for name in ("naive", "fault-scaled"):
            case = Case(variant=name, seq_len=128, heads=4, head_dim=32, inputs=f"file:{path}", mode=mode)
            result = measure_case(case, faulty_registry.get(name), FAST)
            assert result.status == "ok", result.reason
            accuracy = result.accuracy
            if name == "naive":
                assert accuracy.ok is True, (scale, accuracy.failures)
                assert accuracy.output.max_rel_error < DEFAULT_TOLERANCES["float32"].max_rel / 4
                if scale > 1:
                    assert accuracy.output.max_abs_error > 2e-5       # what the absolute bound failed
            else:
                assert accuracy.ok is False
                assert accuracy.output.max_rel_error == pytest.approx(1e-2, rel=1e-3)
                assert "output max_rel 1.0e-02 > 2.0e-05 (float32 tolerance of fault-scaled)" in accuracy.failures


def test_accuracy_off_is_none_and_non_finite_output_fails(faulty_registry):
    off = measure_case(small_case("naive"), faulty_registry.get("naive"), MeasureSettings(contention_retries=0,
        warmup_s=0.01, budget_s=0.05, min_reps=3, memory=False, telemetry=False, accuracy=False))
    assert off.status == "ok" and off.accuracy is None
    nan = measure_case(small_case("fault-nan"), faulty_registry.get("fault-nan"), FAST)
    assert nan.status == "error" and nan.accuracy.ok is False
    assert "non-finite" in nan.accuracy.failures[0]


def test_an_approximation_is_judged_against_its_own_function_not_exact_softmax():
    registry = load_registry()
    performer = registry.get("performer")
    result = measure_case(small_case("performer", params=dict(performer.params)), performer, FAST)
    accuracy = result.accuracy
    assert accuracy.approx.rel_l2_error > 10 * accuracy.tolerance["rel_l2"]   # far from softmax: reported only
    assert accuracy.ok is True, accuracy.failures


# --- shown as inaccurate: summary, show, report ----------------------------------------------------


@pytest.fixture
def plugin_env(tmp_path, cli_env):
    site = write_faulty_plugins(tmp_path / "site")
    env = dict(cli_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), env.get("PYTHONPATH"))))
    env["COLUMNS"] = "200"
    yield env
    sys.modules.pop("attnbench_faulty", None)


@pytest.mark.e2e
def test_summary_show_and_report_show_an_inaccurate_cell(tmp_path: Path, plugin_env):
    suite = tmp_path / "planted.toml"
    suite.write_text(tiny_suite("planted", ["naive", "fault-scaled"], seq_lens=(64,)))
    report = tmp_path / "planted.html"
    run = subprocess.run([*ATTNBENCH, "run", str(suite), "--name", "planted", "--no-report"], capture_output=True,
                         text=True, env=plugin_env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "inaccurate cells: 1" in run.stdout, run.stdout
    assert "inaccurate" in run.stdout.split("cells by status")[0], "the table cell is not marked"

    loaded = load_run(Path(plugin_env["ATTNBENCH_RESULTS"]) / next(iter(os.listdir(plugin_env["ATTNBENCH_RESULTS"]))))
    frame = tidy_frame([loaded]).set_index("variant")
    assert frame.loc["fault-scaled", "accuracy_ok"] is False or frame.loc["fault-scaled", "accuracy_ok"] == False  # noqa: E712
    assert frame.loc["naive", "accuracy_ok"] == True  # noqa: E712

    show = subprocess.run([*ATTNBENCH, "show", "planted"], capture_output=True, text=True, env=plugin_env,
                          timeout=120, cwd=tmp_path)
    assert show.returncode == 0, show.stdout + show.stderr
    text = " ".join(show.stdout.split())
    assert "inaccurate cells: 1" in text
    assert "fault-scaled-cpu-float32-full-fwd-B1H2N64d32: output rel_l2 1.0e-02 > 5.0e-06" in text, text
    assert "naive-cpu" not in text.split("inaccurate cells")[1]

    made = subprocess.run([*ATTNBENCH, "report", "planted", "-o", str(report)], capture_output=True, text=True,
                          env=plugin_env, timeout=300, cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    html = report.read_text(encoding="utf-8")
    section = html.split('<section id="inaccurate">')[1].split("</section>")[0]
    assert "Inaccurate cells (1)" in section
    answers = html.split('<section id="answers">')[1].split("</section>")[0]
    assert '<a href="#inaccurate">1 inaccurate cell</a>' in answers, "the answers do not warn of it first"
    assert "<b>fault-scaled</b>" not in answers                  # an inaccurate cell wins nothing
    row = re.sub(r"\s+", " ", section.split("<tbody>")[1])
    assert "<th>fault-scaled</th>" in row and "seq_len 64" in row
    assert "<td>output rel_l2</td>" in row and "1.0e-02" in row
    assert "5.0e-06 (float32 tolerance of fault-scaled)" in row
    assert "naive" not in row
    assert "inaccurate: over its tolerance" in html.split('<section id="tables">')[1]


def test_the_report_has_no_inaccurate_section_when_every_cell_is_accurate(tmp_path: Path):
    from synthetic_runs import write_synthetic_run

    from attnbench.report import build_report_html

    html = build_report_html([load_run(write_synthetic_run(tmp_path / "results"))])
    assert 'id="inaccurate"' not in html


# --- every built-in variant passes on the quick suite's shapes -------------------------------------


@pytest.mark.e2e
def test_every_builtin_variant_is_accurate_on_the_quick_suites_shapes():
    """The quick suite's cells (fp32, heads 8, head_dim 64, qk_std 0.5) at seq_len 128 and 256 (~40 s: compiles)."""
    registry = load_registry()
    suite = with_overrides(load_suite("quick"), seq_lens=[128, 256])
    checked = []
    for case in expand(suite, registry):
        variant = registry.get(case.variant)
        if variant.unsupported_reasons(case):
            continue
        result = measure_case(case, variant, FAST)
        assert result.status == "ok", f"{case.label}: {result.reason}"
        assert result.accuracy.ok is True, f"{case.label}: {result.accuracy.failures}"
        checked.append(case.variant)
    assert {"naive", "performer", "longformer", "mamba2-ssd", "luong-local"} <= set(checked)

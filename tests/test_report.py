"""The HTML report: built from synthetic runs with known numbers, and from a tiny real run."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_runs import (
    HOSTILE_KNOB,
    HOSTILE_VARIANT,
    TIME_CONSTANT,
    spec_with,
    variants_with_hostile,
    write_synthetic_run,
)
from tiny_suites import tiny_suite

from attnbench.cli.report import report_command
from attnbench.core.errors import AttnbenchError, StoreError
from attnbench.report import build_report_html, write_report
from attnbench.report.analysis import crossovers, quality_views
from attnbench.report.data import prepare
from attnbench.report.fits import crossover, loglog_slope, pareto_frontier
from attnbench.store import load_run

SECTIONS = ("run", "tables", "plots", "crossovers", "quality", "attention-maps", "failures")
SEQ_LENS = (256, 512, 1024, 2048, 4096)
EXTERNAL = re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def build_runs(results_dir: Path) -> dict[str, Path]:
    """The synthetic runs the report tests share: a hostile one, an uncalibrated one without maps."""
    return {
        "main": write_synthetic_run(results_dir, spec_with(name="main", seq_lens=SEQ_LENS,
                                                           variants=variants_with_hostile())),
        "bare": write_synthetic_run(results_dir, spec_with(name="bare", seq_lens=(256, 1024), calibrated=False,
                                                           attention_maps=False, seed=3)),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return build_runs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def main_html(runs) -> str:
    return build_report_html([load_run(runs["main"])])


@pytest.fixture(scope="module")
def two_run_html(runs) -> str:
    return build_report_html([load_run(runs["main"]), load_run(runs["bare"])])


def test_fitted_slope_of_a_quadratic_series_is_two():
    lengths = [256, 512, 1024, 2048, 4096]
    assert loglog_slope(lengths, [3e-9 * n * n for n in lengths]) == pytest.approx(2.0, abs=0.01)
    assert loglog_slope(lengths, [5.0 * n for n in lengths]) == pytest.approx(1.0, abs=0.01)
    assert loglog_slope([256], [1.0]) is None


def test_slopes_from_a_stored_run_match_the_laws(runs):
    frame = prepare([load_run(runs["main"])]).frame
    flash = frame[(frame["variant"] == "sdpa-flash") & (frame["status"] == "ok")].sort_values("seq_len")
    assert list(flash["time_median_s"]) == pytest.approx([TIME_CONSTANT * n * n for n in SEQ_LENS])
    assert loglog_slope(flash["seq_len"], flash["time_median_s"]) == pytest.approx(2.0, abs=0.01)
    assert loglog_slope(flash["seq_len"], flash["peak_bytes"]) == pytest.approx(1.0, abs=0.01)
    performer = frame[frame["series"] == "performer (features=64)"]
    assert loglog_slope(performer["seq_len"], performer["time_median_s"]) == pytest.approx(1.0, abs=0.01)


def test_every_section_is_there_with_how_to_read_it(main_html):
    for section in SECTIONS:
        match = re.search(rf'<section id="{section}">(.*?)</section>', main_html, re.S)
        assert match, f"section {section} missing"
        assert '<p class="how">' in match.group(1), f"section {section} has no sentence on how to read it"


def test_knob_settings_are_rows_and_cells_that_did_not_run_say_why(main_html):
    assert "performer (features=64)" in main_html
    assert "performer (features=256)" in main_html
    assert "oom: needs" in main_html
    assert "unsupported: runs on cuda only, not on cpu" in main_html
    tables = re.search(r'<section id="tables">(.*?)</section>', main_html, re.S).group(1)
    assert "<td></td>" not in tables and '<td class="ok"></td>' not in tables


def test_hostile_names_show_as_text_and_never_as_markup(main_html):
    assert HOSTILE_VARIANT not in main_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in main_html
    assert HOSTILE_KNOB not in main_html
    assert "&lt;img src=x onerror=" in main_html
    assert "<b>family</b>" not in main_html
    assert "<script" not in main_html.lower()


def test_nothing_is_fetched_from_anywhere(main_html):
    assert not EXTERNAL.search(main_html)
    assert "@import" not in main_html and "url(" not in main_html
    assert "<link" not in main_html.lower()
    assert "Content-Security-Policy" in main_html


def test_images_are_inline_pngs_that_decode(main_html):
    sources = re.findall(r'<img[^>]*src="([^"]+)"', main_html)
    assert len(sources) >= 3    # a workload figure, a quality figure, the attention maps
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 100 and height > 100


def test_run_section_shows_environment_calibration_and_counts(main_html, runs):
    run = load_run(runs["main"]).run
    section = re.search(r'<section id="run">(.*?)</section>', main_html, re.S).group(1)
    assert run.run_id in section and "Synthetic CPU" in section
    assert "120 GFLOP/s" in section and "10 GB/s" in section
    assert "ok: " in section and "oom: 1" in section and "unsupported: 5" in section


def test_uncalibrated_run_without_maps_says_so(two_run_html):
    bare_card = two_run_html.split('class="card run-card"')[2]
    assert "not calibrated" in bare_card
    assert "has no attention_maps.json" in two_run_html


def test_crossovers_are_where_the_laws_cross(runs):
    rows, notes = crossovers(prepare([load_run(runs["main"])]))
    found = {row.series: row for row in rows}
    # performer: 300·c·N·(features/64) against sdpa-flash's c·N²: crosses at N = 300·features/64
    assert found["performer (features=64)"].faster_from == "from seq_len 512"
    assert found["performer (features=256)"].faster_from == "from seq_len 2048"
    assert found["performer (features=64)"].smaller_from == "never in this range"   # same bytes as flash
    assert "naive" not in found and "sdpa-flash" not in found
    assert not notes


def test_crossover_rules():
    lengths = [1, 2, 3, 4]
    assert crossover(lengths, [5, 1, 1, 1], [2, 2, 2, 2]) == 2
    assert crossover(lengths, [1, 5, 1, 1], [2, 2, 2, 2]) == 3          # must stay faster
    assert crossover(lengths, [5, 5, 5, 5], [2, 2, 2, 2]) is None
    assert crossover(lengths, [5, 1, 1, None], [2, 2, 2, 2]) is None    # the candidate failed at the end
    assert crossover(lengths, [5, 1, 1, 1], [2, 2, None, None]) == 2    # the baseline failed (oom)


def test_pareto_frontier_keeps_only_undominated_points():
    costs = [1.0, 2.0, 3.0, 2.5, 4.0]
    errors = [0.5, 0.3, 0.4, 0.1, 0.05]
    assert pareto_frontier(costs, errors) == [0, 1, 3, 4]


def test_quality_view_uses_the_largest_length_with_an_error(runs):
    views = quality_views(prepare([load_run(runs["main"])]))
    assert len(views) == 1 and views[0].seq_len == 4096
    assert {row["series"] for row in views[0].frontier} == {"performer (features=64)", "performer (features=256)"}


def test_attention_maps_from_the_run_are_drawn(main_html):
    section = re.search(r'<section id="attention-maps">(.*?)</section>', main_html, re.S).group(1)
    assert "<img" in section
    assert "mamba-scan" in section and "&lt;no weights&gt;" in section


def test_several_runs_in_one_report_are_told_apart(two_run_html):
    tables = re.search(r'<section id="tables">(.*?)</section>', two_run_html, re.S).group(1)
    assert "<th>run</th>" in tables
    assert "<td>main</td>" in tables and "<td>bare</td>" in tables
    assert two_run_html.count('class="card run-card"') == 2


def test_write_report_defaults_to_reports_folder(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_report([load_run(runs["bare"])])
    assert path == Path("reports") / "bare.html"
    assert (tmp_path / "reports" / "bare.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_unknown_baseline_is_a_user_error(runs):
    with pytest.raises(AttnbenchError, match="--baseline 'flash-attn' is not a variant of these runs"):
        build_report_html([load_run(runs["bare"])], baseline="flash-attn")


def test_report_command(runs, tmp_path):
    output = tmp_path / "out" / "r.html"
    results = str(runs["main"].parent)
    result = CliRunner().invoke(report_command, ["bare", "-o", str(output), "--results", results,
                                                 "--baseline", "naive"])
    assert result.exit_code == 0, result.output
    assert f"report written to {output}" in result.output
    assert "baseline: naive (chosen with --baseline)" in output.read_text(encoding="utf-8")


def test_report_command_unknown_run_is_a_store_error(runs):
    result = CliRunner().invoke(report_command, ["no-such-run", "--results", str(runs["main"].parent)])
    assert isinstance(result.exception, StoreError)
    assert "no run 'no-such-run'" in str(result.exception)


def test_report_builds_without_torch(runs, tmp_path):
    # A finder that refuses torch models a machine where it is not installed (a None entry in
    # sys.modules would not: libraries such as scipy probe sys.modules["torch"] directly).
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
                return None

        sys.meta_path.insert(0, NoTorch())
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("torch could still be imported")
        from pathlib import Path
        import attnbench.report
        from attnbench.report.compare import compare_runs
        from attnbench.store import load_run
        run = load_run({str(runs["bare"])!r})
        path = attnbench.report.write_report([run], Path({str(tmp_path / "t.html")!r}))
        compare_runs(run, run)
        assert "torch" not in sys.modules
        print("bytes", path.stat().st_size)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "MPLBACKEND": "Agg"})
    assert completed.returncode == 0, completed.stderr
    assert "bytes" in completed.stdout


def test_attention_maps_with_the_registry(tmp_path):
    import torch

    from attnbench.core.registry import Registry, default_registry
    from attnbench.core.variant import Variant
    from attnbench.measure.attention_maps import write_attention_maps

    class Broken(Variant):
        name = "broken"
        family = "test"
        computes = "softmax_attention"

        def attention_weights(self, case, inputs):
            raise RuntimeError("no weights <here>")

    class Uniform(Variant):
        name = "uniform"
        family = "test"
        computes = "mean_attention"

        def attention_weights(self, case, inputs):
            return torch.full((1, 1, case.seq_len, case.kv_len), 1.0 / case.kv_len, dtype=torch.float64)

    real = default_registry()
    registry = Registry(variants={**real.variants, "broken": Broken(), "uniform": Uniform()},
                        failures=real.failures, origins=real.origins)
    names = ["naive", "broken", "uniform", "not-registered", *real.names()]
    path = write_attention_maps(tmp_path, registry, names, seq_len=16, head_dim=8)
    maps = json.loads(path.read_text(encoding="utf-8"))
    assert maps["seq_len"] == 16 and maps["kv_len"] == 16
    for row in maps["exact"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
    assert maps["variants"]["uniform"][3] == [0.0625] * 16
    assert "RuntimeError: no weights <here>" == maps["errors"]["broken"]
    assert "not-registered" in maps["errors"]
    assert "naive" in maps["no_weights"]
    for name, weights in maps["variants"].items():      # whatever the registered variants give
        assert len(weights) == 16 and all(len(row) == 16 for row in weights), name
    assert write_attention_maps(tmp_path, registry, []) is None


@pytest.mark.e2e
def test_a_tiny_real_run_is_reported(tmp_path):
    from attnbench.core.registry import default_registry
    from attnbench.engine import sweep
    from attnbench.measure.attention_maps import write_attention_maps
    from attnbench.plan.suite import parse_suite

    suite = parse_suite(tiny_suite("tiny", ["naive", "sdpa-math"],
                                   defaults={"batch": 1, "heads": 1, "head_dim": 16, "dtype": "float32"},
                                   measure={"min_reps": 5}), source="<test>")
    registry = default_registry()
    outcome = sweep.run_suite(suite, registry, tmp_path / "results", name="tiny")
    write_attention_maps(outcome.run_path, registry, ["naive", "sdpa-math"])
    loaded = load_run(outcome.run_path)
    assert len(loaded.cells) == 4
    path = write_report([loaded], tmp_path / "tiny.html")
    html = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "naive" in html and "sdpa-math" in html
    assert not EXTERNAL.search(html)

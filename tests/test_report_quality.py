"""The report's task quality section: recall per configuration from a synthetic run with known laws.

The run (`synthetic_runs.write_quality_run`) trains every variant at two
seq_lens over three seeds (seed s recalls law + (s - 1)·RECALL_SPREAD; the
performer's seed 2 crashes) and times each shape once as a kernel cell.
"""

from __future__ import annotations

import base64
import re

import pytest
from synthetic_runs import (
    HOSTILE_REASON,
    HOSTILE_VARIANT,
    QUALITY_VARIANTS,
    RECALL_SPREAD,
    QualitySpec,
    quality_recall,
    quality_time,
    spec_with,
    write_quality_run,
    write_synthetic_run,
)

from attnbench.core.units import format_seconds
from attnbench.report import build_report_html
from attnbench.report.analysis import crossovers
from attnbench.report.data import prepare
from attnbench.report.tables import workload_table
from attnbench.report.tasks import frontier, task_failures, task_groups
from attnbench.store import load_run, tidy_frame

SDPA, PERFORMER, LINEAR, HOSTILE = QUALITY_VARIANTS


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory):
    return load_run(write_quality_run(tmp_path_factory.mktemp("quality")))


@pytest.fixture(scope="module")
def html(quality_run) -> str:
    return build_report_html([quality_run])


def section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start:html.index("</section>", start)]


def test_timing_frame_holds_the_kernel_cells_only(quality_run):
    data = prepare([quality_run])
    frame = tidy_frame([quality_run])
    kernels = frame[frame["task"] == "none"]
    assert len(data.frame) == len(kernels) == 2 * 5            # 5 configurations (a knob each) × 2 seq_lens
    assert set(data.frame["task"]) == {"none"}
    assert len(data.task_cells) == len(frame) - len(kernels) == 2 * 5 * 3
    ok = data.frame[data.frame["status"] == "ok"]
    assert ok["time_median_s"].notna().all()                    # no quality cell, so no missing time
    assert set(data.frame["workload"]) == {"float32 · fwd_bwd · causal · head_dim=16"}
    linear = ok[(ok["variant"] == "linear") & (ok["seq_len"] == 64)]
    assert float(linear["time_median_s"].iloc[0]) == pytest.approx(quality_time(LINEAR, {}, 64))


def test_timing_tables_and_failures_do_not_show_quality_cells(quality_run, html):
    data = prepare([quality_run])
    (workload, rows), = data.workloads()
    table = workload_table(data, workload, rows)
    assert table.lengths == [32, 64]
    assert [series for series, _, _ in table.rows] == ["<script>alert(1)</script>", "sdpa-math", "linear",
                                                       "performer (features=16)", "performer (features=64)"]
    assert table.groups == ["exact softmax attention", "", "other functions (not drop-in for softmax attention)", "", ""]
    timing = section(html, "tables")
    assert "recall" not in timing and "nan" not in timing.lower()
    failed = section(html, "failures")
    assert "worker died training" not in failed            # quality failures are the task section's
    assert failed.count("<tr>") == 1 + 2                    # header + the hostile kernel cell at 2 lengths
    assert crossovers(data)[0] == []                        # no baseline here: nothing compared, nothing broken


def test_recall_table_has_the_mean_and_the_spread_over_seeds(html):
    tasks = section(html, "task-quality")
    assert "mqar kv4 · 2 layers · 100 steps · d_model 32 · float32 fwd_bwd · cpu" in tasks
    assert "2 heads × 16, batch 8" in tasks
    for variant, params in ((SDPA, {}), (LINEAR, {})):
        mean = quality_recall(variant, params)
        assert (f"recall {mean:.1%} ({mean - RECALL_SPREAD:.1%}–{mean + RECALL_SPREAD:.1%}, 3 seeds)") in tasks
    crashed = quality_recall(PERFORMER, {"features": 64})          # seeds 0 and 1 trained
    assert f"recall {crashed - RECALL_SPREAD / 2:.1%} ({crashed - RECALL_SPREAD:.1%}–{crashed:.1%}, 2 seeds)" in tasks
    assert tasks.count("1 of 3 seeds failed") == 4                  # two knob settings × two lengths
    assert "state 4,096 (head_dim=16)" in tasks                     # the KV cache at seq_len 64: 2·64·2·16
    assert "state 2,048 (features=64)" in tasks
    assert f"kernel {format_seconds(quality_time(SDPA, {}, 64))}/call" in tasks
    assert f"final loss {1 - quality_recall(SDPA, {}):.3g}" in tasks


def test_frontier_picks_the_undominated_configurations_at_each_length(quality_run):
    (group,) = task_groups(prepare([quality_run]))
    picked = [(row["seq_len"], row["series"]) for row in frontier(group.rows, multi_run=False)]
    # seq_len 32: performer 64 (57.5%, 1.5 ms) loses to sdpa-math (95%, 1 ms); 64: it is faster than sdpa (4 ms).
    assert picked == [("32", "linear"), ("32", "sdpa-math"),
                      ("64", "linear"), ("64", "performer (features=64)"), ("64", "sdpa-math")]
    assert group.longest == 64


def test_failed_configurations_are_listed_with_their_reason_escaped(quality_run, html):
    failures = task_failures(prepare([quality_run]))
    assert {(f["series"], f["seq_len"], f["seeds"], f["status"]) for f in failures} == {
        (HOSTILE_VARIANT, "32", "0, 1, 2", "unsupported"), (HOSTILE_VARIANT, "64", "0, 1, 2", "unsupported"),
        *{(f"performer (features={k})", n, "2", "crashed") for k in (16, 64) for n in ("32", "64")}}
    tasks = section(html, "task-quality")
    assert HOSTILE_REASON not in html and "<script>" not in html and "<b>family</b>" not in html
    assert "needs &lt;b&gt;cuda&lt;/b&gt; &amp; a &lt;script&gt;alert(2)&lt;/script&gt; kernel" in tasks
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tasks


def test_the_figure_is_an_inline_png(html):
    tasks = section(html, "task-quality")
    (uri,) = re.findall(r'src="data:image/png;base64,([^"]+)"', tasks)
    assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<a href="#task-quality">' in html


def test_a_run_without_quality_cells_has_no_task_section(tmp_path):
    run = load_run(write_synthetic_run(tmp_path, spec_with(seq_lens=(256, 512), attention_maps=False)))
    html = build_report_html([run])
    assert 'id="task-quality"' not in html and "#task-quality" not in html
    assert prepare([run]).tasks.empty


def test_a_quality_run_without_kernel_cells_says_there_is_no_frontier(tmp_path):
    run = load_run(write_quality_run(tmp_path, QualitySpec(kernels=False, seq_lens=(32,), seeds=(0,))))
    html = build_report_html([run])
    tasks = section(html, "task-quality")
    assert "kernel not timed" in tasks and "there is no frontier" in tasks
    assert "These runs hold no cells" in section(html, "tables")

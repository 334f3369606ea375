"""The report answers first: per workload and length the fastest exact variant, the next, the least memory,
the approximations worth their error, the fastest other function and the crossovers, all from synthetic
runs whose laws give the expected winners; the run card's calibration in units, details collapsed."""

from __future__ import annotations

import re

import pytest
from synthetic_runs import (
    DEFAULT_VARIANTS,
    SyntheticVariant,
    spec_with,
    synthetic_time,
    write_synthetic_run,
)

from attnbench.core.units import format_bytes, format_seconds
from attnbench.report import build_report_html
from attnbench.report.analysis import crossovers
from attnbench.report.data import prepare
from attnbench.report.headline import headlines
from attnbench.report.runcard import calibration_view
from attnbench.store import load_run

SEQ_LENS = (256, 512, 1024, 2048, 4096)
SSM = SyntheticVariant("mamba2-ssd", "ssm", "scalar_decay_ssm", 50.0, 1, 1)
VARIANTS = (*DEFAULT_VARIANTS, SSM)
BY_NAME = {v.name: v for v in VARIANTS}


def law(name: str, n: int, features: int | None = None) -> float:
    return synthetic_time(BY_NAME[name], {"features": features} if features else {}, n)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("answers")


@pytest.fixture(scope="module")
def main_run(results):
    return load_run(write_synthetic_run(results, spec_with(name="laws", seq_lens=SEQ_LENS, variants=VARIANTS,
                                                           attention_maps=False)))


def answers_of(loaded):
    data = prepare([loaded])
    (headline,) = headlines(data, crossovers(data)[0])
    return headline, {a.length: a for a in headline.answers}


def test_the_fastest_exact_variant_and_the_next_at_each_length(main_run):
    headline, answers = answers_of(main_run)
    assert sorted(answers) == list(SEQ_LENS)
    for n in SEQ_LENS:
        answer = answers[n]
        assert (answer.fastest, answer.fastest_time) == ("sdpa-flash", format_seconds(law("sdpa-flash", n)))
        assert answer.least_memory == f"sdpa-flash {format_bytes(4096 * n)}"      # N bytes per token, naive N²
        assert answer.other == f"mamba2-ssd {format_seconds(law('mamba2-ssd', n))}"
    for n in SEQ_LENS[:-1]:
        assert answers[n].runner_up == f"naive {format_seconds(law('naive', n))} (1.5× slower)"
    assert answers[4096].runner_up == "–"            # naive ran out of memory, sdpa-cudnn is cuda only


def test_approximations_are_named_where_they_beat_the_fastest_exact(main_run):
    _, answers = answers_of(main_run)
    # performer: 300·c·N·features/64 against sdpa-flash's c·N²; error 1/√features
    assert answers[256].approximations == ("none faster than sdpa-flash",)
    fast = law("performer", 512, 64)
    assert answers[512].approximations == (
        f"performer (features=64): {format_seconds(fast)}, error 0.12, "
        f"{law('sdpa-flash', 512) / fast:.1f}× faster, {format_bytes(4096 * 512)}",)
    names = [text.split(":")[0] for text in answers[2048].approximations]
    assert names == ["performer (features=64)", "performer (features=256)"]      # faster, then closer to exact
    assert "error 0.062, 1.7× faster" in answers[2048].approximations[1]


def test_crossovers_are_sentences_grouped_by_length(main_run):
    headline, _ = answers_of(main_run)
    assert headline.crossovers == (
        "Faster than sdpa-flash from seq_len 256: mamba2-ssd; from seq_len 512: performer (features=64); "
        "from seq_len 2048: performer (features=256).",
        "Less memory than sdpa-flash at no measured length.")


def test_contended_and_inaccurate_cells_win_nothing_and_are_named(results):
    loaded = load_run(write_synthetic_run(results, spec_with(
        name="flagged", seq_lens=(512, 1024), variants=VARIANTS, attention_maps=False,
        contended=(("sdpa-flash", 1024),), inaccurate=(("naive", 512),))))
    headline, answers = answers_of(loaded)
    assert answers[1024].fastest == "naive"
    assert answers[512].fastest == "sdpa-flash" and answers[512].runner_up == "–"
    assert headline.notes == ("Left out (contended): sdpa-flash at seq_len 1024.",
                              "Left out (inaccurate): naive at seq_len 512.")


def test_the_page_opens_with_the_answers_and_a_one_length_workload_is_a_table(main_run, results):
    single = load_run(write_synthetic_run(results, spec_with(name="one", seq_lens=(1024,), head_dim=32,
                                                             attention_maps=False)))
    html = build_report_html([main_run, single])
    assert html.index('<section id="answers">') < html.index('<section id="run">') < html.index(
        '<section id="tables">')
    answers = re.search(r'<section id="answers">(.*?)</section>', html, re.S).group(1)
    first = answers.split('<div class="answer">')[1]
    assert "head_dim=64" in first.split("</h3>")[0]           # the workload with the most cells first
    for n in SEQ_LENS:
        assert re.search(rf'<td class="num">{n}</td><td class="winner"><b>sdpa-flash</b>', first)
    assert first.count('<img class="overview"') == 1
    one = answers.split('<div class="answer">')[2]
    assert "head_dim=32" in one and "<img" not in one and "One length measured" in one
    plots = re.search(r'<section id="plots">(.*?)</section>', html, re.S).group(1)
    assert plots.count("<img") == 1 and "one length measured, no plots" in plots


CALIBRATION = {
    "cache_path": "/root/.cache/attnbench/calibration-04a1e7bdf336777d.json", "cached": False,
    "copy_bytes": 268435456, "copy_bytes_per_s": 18896386719.2, "device": "cpu", "fingerprint": "04a1e7bdf336777d",
    "fingerprint_fields": {"cpu_model": "Xeon", "threads": 2, "torch": "2.13.0+cpu"}, "load_avg_1m": 0.8046875,
    "matmul_flops_per_s": {"float32": 281752027545.6}, "matmul_size": {"float32": 2048},
    "measured_at": "2026-12-06T07:25:13+00:00", "method": "matmul: median of torch.mm", "seconds": 1.3100977,
    "warnings": ["calibrated while the 1-minute load average (3.1) exceeded the 2 cores"]}


def test_the_calibration_card_reads_in_units_and_keeps_paths_in_details():
    rows, warnings, details = calibration_view(CALIBRATION)
    assert rows == (("matmul peak, float32", "282 GFLOP/s, 2048×2048 matmul"),
                    ("copy bandwidth", "18.9 GB/s, 128 MiB copied"),
                    ("measured", "2026-12-06 07:25 UTC in 1.31 s"),
                    ("load average then", "0.80 (1 minute)"))
    assert warnings == ("calibrated while the 1-minute load average (3.1) exceeded the 2 cores",)
    assert dict(details) == {"cache_path": CALIBRATION["cache_path"], "fingerprint": "04a1e7bdf336777d",
                             "fingerprint_fields": "cpu_model: Xeon, threads: 2, torch: 2.13.0+cpu",
                             "method": "matmul: median of torch.mm"}


def test_the_run_card_shows_no_raw_json_outside_its_details(main_run):
    html = build_report_html([main_run])
    card = re.search(r'<div class="card run-card">(.*?)<details>', html, re.S).group(1)
    assert "120 GFLOP/s" in card and "10 GB/s" in card and "Synthetic CPU, 2 threads, torch 2.4.0" in card
    assert "{" not in card and "cache_path" not in card and "fingerprint" not in card
    assert "0.6630859375" not in card and "seconds" not in card

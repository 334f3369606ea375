"""The report of decode and cross-attention runs: workloads per query length swept over kv_len,
labels that name GQA, masks and score mods, traffic in the tables and a bandwidth panel."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from synthetic_runs import (
    CALIBRATION,
    DecodeSpec,
    decode_bytes_moved,
    decode_case,
    decode_flops,
    decode_time,
    spec_with,
    write_decode_run,
    write_synthetic_run,
)

from attnbench.core.units import format_bytes
from attnbench.report import build_report_html, plots
from attnbench.report.data import prepare
from attnbench.report.fits import loglog_slope
from attnbench.report.tables import workload_table
from attnbench.store import load_run

KV_LENS = (1024, 2048, 4096, 8192)
DECODE = DecodeSpec(name="decode", q_lens=(1, 4), kv_lens=KV_LENS, heads=8, kv_heads=2)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decode-results")


@pytest.fixture(scope="module")
def decode_data(results):
    return prepare([load_run(write_decode_run(results, DECODE))])


def workload(data, label_part: str):
    (found,) = [(label, rows) for label, rows in data.workloads() if label_part in label]
    return found


def test_a_decode_sweep_is_one_workload_per_q_len_over_the_kv_lens(decode_data):
    labels = [label for label, _ in decode_data.workloads()]
    assert labels == ["float32 · fwd · causal · GQA 8/2 · head_dim=64 · decode q_len 1",
                      "float32 · fwd · causal · GQA 8/2 · head_dim=64 · decode q_len 4"]
    for q_len in (1, 4):
        _, rows = workload(decode_data, f"decode q_len {q_len}")
        assert set(rows["seq_len"]) == {q_len}
        assert set(rows["length_axis"]) == {"kv_len"}
        for _series, group in rows.groupby("series"):
            assert list(group["length"]) == list(KV_LENS)


def test_plots_and_speedups_put_kv_len_on_the_x_axis(decode_data):
    label, rows = workload(decode_data, "decode q_len 1")
    ax = Figure().subplots()
    plots.scaling_panel(ax, rows, "time_median_s", plots.Styles(list(rows["series"]), ["decode"]), False,
                        "time", "Time", timed=True)
    assert ax.get_xlabel() == "kv_len"
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    # time = bytes moved / share of the copy bandwidth: the slope over kv_len is that of the bytes
    flash = [decode_time(DECODE.variants[0], decode_case(DECODE, "sdpa-flash", 1, m)) for m in KV_LENS]
    slope = loglog_slope(KV_LENS, flash)
    assert lines[f"sdpa-flash (slope {slope:.2f})"] == [float(m) for m in KV_LENS]
    assert slope == pytest.approx(1.0, abs=0.01)
    speedups = plots.speedup_matrix(rows, "sdpa-flash", False)
    assert list(speedups.columns) == list(KV_LENS)
    assert list(speedups.loc["naive"]) == pytest.approx([0.5] * 4)       # a quarter of the bandwidth, not half


def test_tables_name_kv_len_columns_and_show_the_traffic(decode_data):
    label, rows = workload(decode_data, "decode q_len 1")
    table = workload_table(decode_data, label, rows)
    assert table.lengths == list(KV_LENS) and table.length_axis == "kv_len"
    assert table.headers == [f"kv_len={m}" for m in KV_LENS]
    assert table.shows_traffic
    by_series = {series: cells for series, _run, cells in table.rows}
    for name, share, rate in (("sdpa-flash", "50%", "5 GB/s"), ("naive", "25%", "2.5 GB/s")):
        for m, cell in zip(KV_LENS, by_series[name], strict=True):
            moved = decode_bytes_moved(decode_case(DECODE, name, 1, m))
            assert f"moves {format_bytes(moved)} · {rate} · {share} of copy bw" in cell.lines


def test_a_compute_bound_self_attention_workload_shows_no_traffic(results):
    # float32 ridge point: 1.2e11 FLOP/s / 1e10 B/s = 12 FLOP/byte; with H = kv_heads = 8, d = 64,
    # q = kv = N: intensity N/4, so N = 32 is memory-bound (8) and N = 512 is not (128).
    spec = DecodeSpec(name="self", q_lens=(32,), kv_heads=8, self_attention=True)
    data = prepare([load_run(write_decode_run(results, spec)),
                    load_run(write_decode_run(results, DecodeSpec(name="self512", q_lens=(512,), heads=4,
                                                                  kv_heads=4, self_attention=True)))])
    tables = {label: workload_table(data, label, rows) for label, rows in data.workloads()}
    assert {label: (t.length_axis, t.headers, t.shows_traffic) for label, t in tables.items()} == {
        "float32 · fwd · causal · heads=8 · head_dim=64": ("seq_len", ["N=32"], True),
        "float32 · fwd · causal · heads=4 · head_dim=64": ("seq_len", ["N=512"], False),
    }
    intensity = decode_flops(decode_case(spec, "naive", 32, 32)) / decode_bytes_moved(decode_case(spec, "naive", 32, 32))
    assert intensity == pytest.approx(8.0)


def test_the_bandwidth_panel_replaces_flops_for_decode(decode_data):
    _, rows = workload(decode_data, "decode q_len 1")
    ax = Figure().subplots()
    assert plots.bandwidth_panel(ax, rows, plots.Styles(list(rows["series"]), ["decode"]), False)
    assert ax.get_xlabel() == "kv_len" and ax.get_ylabel() == "fraction of copy bandwidth"
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines["sdpa-flash"] == ([float(m) for m in KV_LENS], pytest.approx([0.5] * 4))
    assert lines["naive"][1] == pytest.approx([0.25] * 4)
    assert lines["calibrated copy bandwidth"][1] == [1.0, 1.0]


def test_decode_cells_sit_on_the_roofline_by_their_intensity(decode_data):
    _, rows = workload(decode_data, "decode q_len 1")
    ax = Figure().subplots()
    bandwidth = CALIBRATION["copy_bytes_per_s"]
    assert plots.roofline_panel(ax, rows, plots.Styles(list(rows["series"]), ["decode"]), False,
                                CALIBRATION["matmul_flops_per_s"]["float32"], bandwidth)
    expected = sorted(decode_flops(c) / decode_bytes_moved(c)
                      for c in (decode_case(DECODE, v, 1, m) for v in ("sdpa-flash", "naive") for m in KV_LENS))
    placed = sorted(x for collection in ax.collections for x, _y in collection.get_offsets())
    assert placed == pytest.approx(expected)
    assert max(placed) < CALIBRATION["matmul_flops_per_s"]["float32"] / bandwidth    # left of the ridge


def test_a_batch_sweep_at_one_kv_cache_size_is_one_workload(results):
    spec = DecodeSpec(name="cache", kv_cache_bytes=2 ** 24, kv_heads=1, v_head_dim=32,
                      mask="sliding_window:512", score_mod="softcap:30")
    data = prepare([load_run(write_decode_run(results, spec))])
    ((label, rows),) = data.workloads()
    assert label == ("float32 · fwd · causal · sliding_window:512 · softcap:30 · KV cache 16 MiB · MQA · "
                     "head_dim=64 · dv 32 · decode q_len 1")
    # one sequence's cache: 1 kv head · kv_len · (64 + 32) · 4 bytes
    batches = [2 ** 24 // (m * 96 * 4) for m in KV_LENS]
    assert sorted(set(rows["batch"]), reverse=True) == batches
    table = workload_table(data, label, rows)
    assert table.headers == [f"kv_len={m} · batch {b}" for m, b in zip(KV_LENS, batches, strict=True)]


def test_without_a_kv_cache_size_each_batch_stays_its_own_workload(results):
    runs = [load_run(write_decode_run(results, DecodeSpec(name=f"b{b}", batch=b, kv_lens=(1024, 2048))))
            for b in (1, 4)]
    labels = [label for label, _ in prepare(runs).workloads()]
    assert labels == ["float32 · fwd · causal · batch=1 · GQA 8/2 · head_dim=64 · decode q_len 1",
                      "float32 · fwd · causal · batch=4 · GQA 8/2 · head_dim=64 · decode q_len 1"]


def test_a_fixed_context_against_a_seq_len_sweep_keeps_seq_len_on_the_x_axis(results):
    cross = load_run(write_decode_run(results, DecodeSpec(name="cross", q_lens=(256, 512, 1024), kv_lens=(77,))))
    wide = load_run(write_decode_run(results, DecodeSpec(name="wide", q_lens=(2048,), kv_lens=(4096, 8192))))
    data = prepare([cross, wide])
    found = {label: rows for label, rows in data.workloads()}
    assert set(found) == {"float32 · fwd · causal · GQA 8/2 · head_dim=64 · kv_len=77",
                          "float32 · fwd · causal · GQA 8/2 · head_dim=64 · q_len 2048"}
    fixed = found["float32 · fwd · causal · GQA 8/2 · head_dim=64 · kv_len=77"]
    assert set(fixed["length_axis"]) == {"seq_len"} and sorted(set(fixed["length"])) == [256, 512, 1024]
    swept = found["float32 · fwd · causal · GQA 8/2 · head_dim=64 · q_len 2048"]
    assert set(swept["length_axis"]) == {"kv_len"} and not swept["decode"].any()


def test_the_html_of_decode_and_self_attention_runs(results, tmp_path):
    decode = load_run(write_decode_run(results, spec_with(DECODE, name="decode-html", q_lens=(1,))))
    prefill = load_run(write_synthetic_run(tmp_path, spec_with(name="prefill", seq_lens=(256, 512),
                                                               attention_maps=False)))
    html = build_report_html([decode, prefill])
    tables = re.search(r'<section id="tables">(.*?)</section>', html, re.S).group(1)
    assert "GQA 8/2" in tables and "decode q_len 1" in tables
    assert "<th>kv_len=1024</th>" in tables and "<th>N=256</th>" in tables
    assert "of copy bw" in tables and "Memory-bound" in tables
    plots_section = re.search(r'<section id="plots">(.*?)</section>', html, re.S).group(1)
    sources = re.findall(r'<img[^>]*src="([^"]+)"', plots_section)
    assert len(sources) == 2
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

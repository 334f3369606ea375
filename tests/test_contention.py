"""Contention detected per sample: the rule on constructed numbers, the re-measure policy with a
fake clock, a real cell under real CPU hogs, and the report leaving a contended cell out.

The hog test starts two `while True: pass` processes (killed in a finally) on this machine's
cores; run it under the bench lock so that nothing else of ours runs beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from attnbench.core.settings import MeasureSettings
from attnbench.measure.contention import (
    SHARE_SIGNAL,
    WAIT_SIGNAL,
    backoff_s,
    descheduled_samples,
    judge,
    measure_until_quiet,
    median_contended,
    median_indices,
    wait_fractions,
    windows,
)
from attnbench.measure.timing import TimedSamples, time_cpu

MS = 1e-3


def timed_samples(samples_s, run_queue_ns=(), cpu_share=(), calls=1) -> TimedSamples:
    return TimedSamples(tuple(samples_s), calls, 0.0, 2, "ci", "cpu-perf-counter",
                        cpu_share=tuple(cpu_share), run_queue_ns=tuple(run_queue_ns))


# ---------------------------------------------------------------- the rule, on constructed numbers


def test_median_indices_odd_and_even():
    assert median_indices([5.0, 1.0, 3.0]) == (2,)
    assert median_indices([4.0, 1.0, 3.0, 2.0]) == (3, 2)
    assert median_indices([]) == ()


def test_windows_reach_the_window_length_around_each_sample():
    assert windows([0.01] * 10, 0.03) == [(0, 3), (0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9),
                                          (7, 10), (7, 10)]
    assert windows([0.1, 0.1], 0.05) == [(0, 1), (1, 2)]            # long samples stand alone
    assert windows([0.01, 0.01], 1.0) == [(0, 2), (0, 2)]           # the whole run when it is shorter


def test_wait_fraction_is_wait_over_runnable_time_across_the_window():
    # 10 ms samples, a 50 ms window: the first five ran 10 ms each, the last five also waited 10 ms each.
    queue = [(10_000_000, 0)] * 5 + [(10_000_000, 10_000_000)] * 5
    fractions = wait_fractions([0.01] * 10, queue, window_s=0.05)
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(0.5)
    assert fractions[4] == pytest.approx(20 / 70)       # window 2..6: two waiting samples out of five
    assert wait_fractions([0.01], [(0, 0)]) == (0.0,)   # never ran nor waited: not descheduled


def test_tick_granular_readings_of_a_quiet_run_are_not_descheduled():
    # The kernel updates a running thread's clocks per tick: 1 ms samples read 0 or 4 ms, never waiting.
    queue = [(4_000_000, 0) if i % 4 == 0 else (0, 0) for i in range(100)]
    flags, signal, _ = descheduled_samples([MS] * 100, queue, [], wait_limit=0.1)
    assert signal == WAIT_SIGNAL and not any(flags)


def test_run_queue_wait_decides_even_for_a_low_quiet_share():
    # A single-threaded variant: share 0.5 of 2 threads throughout, quiet, so nothing is descheduled...
    walls = [0.01] * 20
    quiet = [(10_000_000, 0)] * 20
    flags, signal, _ = descheduled_samples(walls, quiet, [0.5] * 20, wait_limit=0.1)
    assert signal == WAIT_SIGNAL and not any(flags)
    # ...while the same share with half the runnable time spent waiting is.
    busy = [(5_000_000, 5_000_000)] * 20
    flags, _, values = descheduled_samples(walls, busy, [0.5] * 20, wait_limit=0.1)
    assert all(flags) and values[0] == pytest.approx(0.5)


def test_without_run_queues_the_share_is_judged_against_the_cells_best_samples():
    walls = [0.05] * 20
    shares = [1.0] * 14 + [0.3] * 6
    flags, signal, _ = descheduled_samples(walls, (), shares, wait_limit=0.1)
    assert signal == SHARE_SIGNAL and flags == (False,) * 14 + (True,) * 6
    assert descheduled_samples(walls, (), (), 0.1)[1] == "none"      # CUDA: nothing to judge


def test_a_cell_is_contended_only_when_its_median_sample_is():
    samples = [1.0, 1.1, 1.2, 5.0, 6.0]
    assert not median_contended(samples, [False, False, False, True, True])   # slow tail only
    assert median_contended(samples, [False, False, True, True, True])
    assert median_contended([1.0, 2.0, 3.0, 4.0], [False, False, True, False])  # either middle one
    assert not median_contended(samples, [])


def test_judge_names_the_median_samples_wait_and_share():
    queue = [(5_000_000, 5_000_000)] * 11
    verdict = judge(timed_samples([0.01] * 11, queue, [0.5] * 11), MeasureSettings())
    assert verdict.contended and verdict.signal == WAIT_SIGNAL
    assert verdict.wait_fraction == pytest.approx(0.5) and verdict.cpu_share == pytest.approx(0.5)
    assert verdict.descheduled == verdict.samples == 11


# ---------------------------------------------------------------- the re-measure policy, with fakes


def test_a_contended_cell_is_remeasured_with_back_off_then_marked():
    busy = timed_samples([0.01] * 11, [(5_000_000, 5_000_000)] * 11, [0.5] * 11)
    slept: list[float] = []
    calls = []
    settings = MeasureSettings(contention_retries=2, contention_backoff_s=0.5)
    measured = measure_until_quiet(lambda: calls.append(1) or busy, settings, sleep=slept.append)
    assert measured.attempts == len(calls) == 3 and measured.contended
    assert slept == [0.5, 1.0] == [backoff_s(1, settings), backoff_s(2, settings)]
    warning = measured.warning(threads=2)
    assert warning.startswith("contended:") and "50%" in warning and "CPU share 0.50 of 2 threads" in warning
    assert "; " not in warning    # the tidy frame joins warnings with '; '
    assert [a["contended"] for a in measured.telemetry()["attempts"]] == [True, True, True]


def test_remeasuring_stops_at_the_first_quiet_attempt():
    busy = timed_samples([0.01] * 11, [(5_000_000, 5_000_000)] * 11)
    quiet = timed_samples([0.005] * 11, [(10_000_000, 0)] * 11)
    attempts = iter([busy, quiet, busy])
    slept: list[float] = []
    measured = measure_until_quiet(lambda: next(attempts), MeasureSettings(), sleep=slept.append)
    assert measured.attempts == 2 and not measured.contended and measured.timed is quiet
    assert slept == [0.5] and measured.warning(2) is None


def test_time_cpu_records_a_share_and_run_queue_per_sample():
    settings = MeasureSettings(warmup_s=0.01, budget_s=0.05, min_sample_s=1e-3)
    timed = time_cpu(lambda: sum(range(2000)), settings, threads=1)
    assert len(timed.cpu_share) == len(timed.samples_s)
    assert all(0 <= share < 5 for share in timed.cpu_share)
    if sys.platform.startswith("linux"):
        assert len(timed.run_queue_ns) == len(timed.samples_s)
        assert sum(run for run, _ in timed.run_queue_ns) > 0


# ---------------------------------------------------------------- a real cell under real hogs


def _others_busy_fraction(seconds: float = 0.5) -> float:
    """Share of the machine's CPU time spent busy (by anyone but an idle us) over `seconds`."""
    def read():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task/*/schedstat")
def test_mamba2_cell_under_two_hogs_is_remeasured_and_marked_but_not_when_quiet():
    from attnbench.core.case import Case
    from attnbench.core.registry import default_registry
    from attnbench.measure.cell import measure_case

    case = Case(variant="mamba2-ssd", seq_len=256, batch=1, heads=8, mode="fwd")
    variant = default_registry().get("mamba2-ssd")
    settings = MeasureSettings(warmup_s=0.05, budget_s=0.4, accuracy=False, memory=False, telemetry=False,
                               contention_retries=2, contention_backoff_s=0.1)
    deadline = time.monotonic() + 60
    while (busy := _others_busy_fraction()) > 0.25 and time.monotonic() < deadline:
        time.sleep(1.0)
    assert busy <= 0.25, (f"the machine stayed {busy:.0%} busy with processes outside this test for a minute: "
                          "no quiet reference (run the end-to-end tier on an otherwise idle machine)")
    quiet = measure_case(case, variant, settings)
    assert quiet.status == "ok", quiet.reason
    assert not quiet.timing.contended, quiet.telemetry["contention"]
    assert not any(w.startswith("contended") for w in quiet.warnings)

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 2))]
    try:
        time.sleep(0.2)
        loaded = measure_case(case, variant, settings)
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
    assert loaded.status == "ok", loaded.reason
    contention = loaded.telemetry["contention"]
    assert loaded.timing.attempts == 3 and loaded.timing.contended, contention
    assert len(contention["attempts"]) == 3 and contention["signal"] == WAIT_SIGNAL
    assert contention["attempts"][-1]["wait_fraction"] > settings.contention_wait
    assert len(loaded.timing.cpu_share) == loaded.timing.reps
    assert any(w.startswith("contended: the median sample was descheduled in all 3 attempts")
               for w in loaded.warnings)


# ---------------------------------------------------------------- the report leaves contended cells out


def _with_contended(loaded, variant: str, seq_len: int, slowdown: float):
    cells = []
    for cell in loaded.cells:
        if cell.case["variant"] == variant and cell.case["seq_len"] == seq_len and cell.result.timing:
            timing = cell.result.timing
            timing = replace(timing, samples_s=tuple(x * slowdown for x in timing.samples_s),
                             median_s=timing.median_s * slowdown, contended=True, attempts=3)
            warning = "contended: the median sample was descheduled in all 3 attempts (test)"
            cell = replace(cell, result=replace(cell.result, timing=timing, warnings=(warning,)))
        cells.append(cell)
    return replace(loaded, cells=tuple(cells))


def test_report_leaves_a_contended_cell_out_of_slopes_and_crossovers(tmp_path):
    from matplotlib.figure import Figure
    from synthetic_runs import SyntheticVariant, spec_with, write_synthetic_run

    from attnbench.report import plots
    from attnbench.report.analysis import contended_cells, crossovers
    from attnbench.report.data import prepare
    from attnbench.store import load_run

    variants = (SyntheticVariant("sdpa-flash", "flash", "softmax_attention", 1.0, 2, 1),
                SyntheticVariant("linear", "linear", "linear_attention", 300.0, 1, 1))
    path = write_synthetic_run(tmp_path, spec_with(name="contended", variants=variants,
                                                   seq_lens=(256, 512, 1024, 2048, 4096), attention_maps=False))
    clean = load_run(path)
    # linear (300·c·N) beats flash (c·N²) from N = 512; a 100× contended cell at 2048 would push that to 4096.
    (row,), _ = crossovers(prepare([clean]))
    assert row.faster_from == "from seq_len 512"
    data = prepare([_with_contended(clean, "linear", 2048, 100.0)])
    (row,), notes = crossovers(data)
    assert row.faster_from == "from seq_len 512"
    assert any("seq_len 2048 left out of the time crossover" in note for note in notes)

    listed = contended_cells(data)
    assert [(c["series"], c["seq_len"]) for c in listed] == [("linear", "2048")]
    assert listed[0]["warning"].startswith("contended:")

    rows = data.frame[data.frame["workload"] == data.frame["workload"].iloc[0]]
    ax = Figure().subplots()
    plots.scaling_panel(ax, rows, "time_median_s", plots.Styles(list(rows["series"]), ["contended"]), False,
                        "time", "Time", timed=True)
    labels = ax.get_legend_handles_labels()[1]
    assert "linear (slope 1.00)" in labels                   # 100× at 2048 would bend the slope well above 1
    assert any(label.startswith("hollow: contended") for label in labels)
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "none" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in hollow] == [[2048.0]]

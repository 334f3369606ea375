"""The sweep, isolated: crashes, hangs and out-of-memory become stored results and the sweep goes on."""

from __future__ import annotations

import html

from rich.console import Console

from attnbench.cli.progress import print_summary
from attnbench.core.registry import load_registry
from attnbench.core.units import format_seconds
from attnbench.engine.sweep import run_suite
from attnbench.plan.suite import parse_suite
from attnbench.report import build_report_html
from attnbench.store import load_run

FAST = """
[measure]
warmup_s = 0.01
budget_s = 0.05
min_reps = 3
contention_retries = 0
timeout_s = {timeout}
"""


def suite_text(variants, lengths=(32,), timeout=30, extra=""):
    names = ", ".join(f'"{v}"' for v in variants)
    return (f'[suite]\nname = "t"\nvariants = [{names}]\n[defaults]\nheads = 2\nhead_dim = 16\n'
            f"[sweep]\nseq_len = {list(lengths)}\n{extra}" + FAST.format(timeout=timeout))


def statuses(run_path):
    loaded = load_run(run_path)
    return {(c.case["variant"], c.case["seq_len"]): c.result for c in loaded.cells}


def test_segfault_hang_and_memory_error_are_stored_and_the_sweep_goes_on(faulty_registry, results_dir):
    suite = parse_suite(suite_text(["fault-segfault", "fault-good", "fault-hang", "fault-memoryerror", "naive"],
                                   lengths=(32, 64), timeout=4), "faults.toml")
    outcome = run_suite(suite, faulty_registry, results_dir)
    results = statuses(outcome.run_path)
    assert len(results) == 10
    crash = results[("fault-segfault", 32)]
    assert crash.status == "crashed" and "SIGSEGV" in crash.reason
    assert results[("fault-hang", 32)].status == "timeout"
    assert "timeout of 4 s" in results[("fault-hang", 32)].reason
    assert results[("fault-memoryerror", 32)].status == "oom"
    assert "MemoryError" in results[("fault-memoryerror", 32)].reason
    for length in (32, 64):
        assert results[("fault-good", length)].status == "ok"
        assert results[("naive", length)].status == "ok"
    assert results[("fault-segfault", 64)].status == "crashed"
    assert results[("fault-hang", 64)].status == "timeout"
    skipped = results[("fault-memoryerror", 64)]
    assert skipped.status == "skipped" and "ran out of memory at seq_len=32" in skipped.reason
    assert load_run(outcome.run_path).status == "finished"


def test_nan_wrong_shape_and_nondeterminism_are_reported(faulty_registry, results_dir):
    suite = parse_suite(suite_text(["fault-nan", "fault-shape", "fault-nondeterministic"]), "f.toml")
    run_path = run_suite(suite, faulty_registry, results_dir).run_path
    results = statuses(run_path)
    nan = results[("fault-nan", 32)]
    assert nan.status == "error" and "non-finite" in nan.reason and nan.timing is not None
    assert not any("non-deterministic" in w for w in nan.warnings), nan.warnings
    kept = f"timed {format_seconds(nan.timing.median_s)} (median; kept with the error)"
    console = Console(record=True, width=400)
    print_summary(run_path, console=console)
    assert kept in console.export_text(), "show drops the timing an error cell keeps"
    assert html.escape(kept) in build_report_html([load_run(run_path)]), "the report drops it"
    shape = results[("fault-shape", 32)]
    assert shape.status == "error" and "shape" in shape.reason
    noisy = results[("fault-nondeterministic", 32)]
    assert noisy.status == "ok" and any("non-deterministic" in w for w in noisy.warnings)


def test_analytic_memory_model_refuses_cells_that_cannot_fit(results_dir):
    registry = load_registry()
    suite = parse_suite(suite_text(["naive"], lengths=(64, 2**21)), "big.toml")
    results = statuses(run_suite(suite, registry, results_dir).run_path)
    assert results[("naive", 64)].status == "ok"
    big = results[("naive", 2**21)]
    assert big.status == "skipped" and "predicted peak" in big.reason and "GiB" in big.reason


def test_unsupported_cells_are_stored_with_every_reason(results_dir):
    registry = load_registry()
    suite = parse_suite(suite_text(["sdpa-efficient", "sdpa-cudnn"]), "u.toml")
    results = statuses(run_suite(suite, registry, results_dir).run_path)
    cudnn = results[("sdpa-cudnn", 32)]
    assert cudnn.status == "unsupported"
    assert "float32" in cudnn.reason and "no CPU kernel" in cudnn.reason


def test_naive_peak_memory_matches_its_score_and_probability_matrices(results_dir):
    registry = load_registry()
    text = ('[suite]\nname = "m"\nvariants = ["naive"]\n[defaults]\nheads = 8\nhead_dim = 64\n'
            "[sweep]\nseq_len = [1024, 2048]\n" + FAST.format(timeout=60))
    for cell in load_run(run_suite(parse_suite(text, "m.toml"), registry, results_dir).run_path).cells:
        seq_len = cell.case["seq_len"]
        analytic = 2 * 8 * seq_len * seq_len * 4
        measured = cell.result.memory.peak_bytes_fwd
        assert abs(measured - analytic) / analytic < 0.15, (seq_len, measured, analytic)
        assert cell.result.memory.method == "torch-profiler-cpu-allocated"
        resident = cell.result.memory.resident_bytes_fwd                     # the second figure, VmHWM
        assert abs(resident - analytic) / analytic < 0.15, (seq_len, resident, analytic)
        assert cell.result.memory.resident_method == "linux-vmhwm"
        assert cell.result.accuracy.output.rel_l2_error < 1e-5


def test_a_leak_and_an_optimistic_memory_model_are_warned(faulty_registry, results_dir):
    suite = parse_suite(suite_text(["fault-leak", "fault-bloat", "fault-good"]), "f.toml")
    results = statuses(run_suite(suite, faulty_registry, results_dir).run_path)
    leak = results[("fault-leak", 32)]
    assert leak.status == "ok" and any(w.startswith("leak: ") for w in leak.warnings), leak.warnings
    bloat = results[("fault-bloat", 32)]
    assert bloat.memory.peak_bytes_fwd >= 160 * 2**20
    assert any("the memory model's 1 MiB" in w for w in bloat.warnings), bloat.warnings
    assert not any(w.startswith("leak: ") for w in bloat.warnings), bloat.warnings
    good = results[("fault-good", 32)]
    assert not any(w.startswith("leak: ") or "memory model" in w for w in good.warnings), good.warnings


def test_the_cpu_memory_peak_repeats_exactly_where_the_resident_peak_does_not():
    """mamba2-ssd frees and reallocates temporaries: its resident high-water mark varies with heap layout,
    the allocator's peak does not."""
    from attnbench.core.case import Case
    from attnbench.core.settings import MeasureSettings
    from attnbench.measure.cell import measure_case

    registry = load_registry()
    case = Case(variant="mamba2-ssd", seq_len=512, heads=4, head_dim=32)
    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, accuracy=False,
                               telemetry=False)
    peaks = {measure_case(case, registry.get("mamba2-ssd"), settings).memory.peak_bytes_fwd for _ in range(5)}
    assert len(peaks) == 1 and next(iter(peaks)) > 0, peaks

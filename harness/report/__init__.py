"""Reports: self-contained HTML pages, tables, plots and comparisons built from stored runs.

Works from the tidy DataFrame (`harness.store.tidy_frame`) and the files of a
run folder only, and never imports torch: a run copied off a GPU cluster is
reported on a laptop without it.

    write_report(runs, output, baseline=None) -> Path     # attnbench report
    compare_runs(base, new) -> Comparison                 # attnbench compare
    write_compare_report(comparison, output) -> Path
"""

from __future__ import annotations

from harness.report.build import build_report_html, default_report_path, write_report
from harness.report.compare import (
    Comparison,
    Gate,
    build_compare_html,
    compare_runs,
    gate_failures,
    parse_gate,
    print_comparison,
    write_compare_report,
)

__all__ = [
    "Comparison", "Gate", "build_compare_html", "build_report_html", "compare_runs", "default_report_path",
    "gate_failures", "parse_gate", "print_comparison", "write_compare_report", "write_report",
]

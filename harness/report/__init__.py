"""Reports: self-contained HTML pages, tables, plots and comparisons built from stored runs.

Works from the tidy DataFrame (`attnbench.store.tidy_frame`) and the files of a
run folder only, and never imports torch: a run copied off a GPU cluster is
reported on a laptop without it.

    write_report(runs, output=None, baseline=None) -> Path   # attnbench report
    compare_runs(base, new) -> Comparison                    # attnbench compare
    gate_failures(comparison, [parse_gate("median:5%")]) -> list[str]
    write_compare_report(comparison, output) -> Path

Names are imported on first use, so that `attnbench compare` without -o never
loads matplotlib and seaborn.
"""

from __future__ import annotations

from attnbench.core.lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(globals(), {
    "attnbench.report.build": ("build_report_html", "default_report_path", "write_report"),
    "attnbench.report.compare": ("Comparison", "compare_runs"),
    "attnbench.report.gates": ("Gate", "gate_failures", "parse_gate"),
    "attnbench.report.compare_view": ("build_compare_html", "print_comparison", "write_compare_report"),
})

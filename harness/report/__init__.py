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

_EXPORTS = {
    "build_report_html": "attnbench.report.build",
    "default_report_path": "attnbench.report.build",
    "write_report": "attnbench.report.build",
    "Comparison": "attnbench.report.compare",
    "Gate": "attnbench.report.gates",
    "build_compare_html": "attnbench.report.compare_view",
    "compare_runs": "attnbench.report.compare",
    "gate_failures": "attnbench.report.gates",
    "parse_gate": "attnbench.report.gates",
    "print_comparison": "attnbench.report.compare_view",
    "write_compare_report": "attnbench.report.compare_view",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)

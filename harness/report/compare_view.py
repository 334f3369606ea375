"""A comparison shown: terminal tables (`print_comparison`) and a self-contained HTML page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from attnbench.core.errors import AttnbenchError
from attnbench.core.machine import package_version
from attnbench.core.units import format_seconds
from attnbench.report.compare import METHOD, CellComparison, Comparison, percent_text
from attnbench.report.data import length_text
from attnbench.report.gates import Gate
from attnbench.report.recall import RecallChange
from attnbench.report.tables import format_error
from attnbench.store import LoadedRun


def print_comparison(comparison: Comparison, console=None) -> None:
    """The comparison as terminal tables (`attnbench.core.terminal`: every figure on one line, in a log too)."""
    from attnbench.core.terminal import make_console, print_table

    console = console or make_console()
    base, new = comparison.base.run, comparison.new.run
    _say(console, f"BASE {base.name} ({base.run_id})  NEW {new.name} ({new.run_id})")
    for table in comparison_tables(comparison):
        print_table(table, console)
    if not comparison.cells and not comparison.recall:
        _say(console, "No case is in both runs.")
    counts = comparison.counts()
    _say(console, ", ".join(f"{k}: {v}" for k, v in counts.items()) +
         f"  (the unit is the worker process: slower/faster need every NEW process median beyond every "
         f"BASE one and |ratio − 1| > {comparison.threshold:.1%} (run --processes K on both sides); "
         "'one process' when a side had one worker process)")
    inaccurate = [c for c in comparison.cells if c.inaccurate]
    if inaccurate:
        _say(console, f"{len(inaccurate)} cells are inaccurate in NEW (accuracy_ok false): " +
             "; ".join(f"{c.series} N={c.seq_len}" for c in inaccurate[:20]), "red")
    for title, items in (("only in BASE", comparison.only_base), ("only in NEW", comparison.only_new)):
        if items:
            _say(console, f"{len(items)} cells {title}: " +
                 "; ".join(f"{i['series']} N={i['seq_len']}" for i in items[:20]) + (" …" if len(items) > 20 else ""))
    if not comparison.environment_diff:
        _say(console, "The two environments are the same.")


def comparison_tables(comparison: Comparison) -> list:
    """The terminal tables of a comparison: one per workload of matched cells, task recall, environment keys."""
    from attnbench.core.terminal import Cell, TextTable

    colors = {"slower": "red", "faster": "green", "too few samples": "yellow", "contended": "yellow"}
    workloads: dict[str, list[CellComparison]] = {}
    for item in comparison.cells:
        workloads.setdefault(item.workload, []).append(item)
    tables = []
    for workload, cells in sorted(workloads.items(), key=lambda item: -len(item[1])):    # the main sweep first
        axis = "N" if cells[0].length_axis == "seq_len" else cells[0].length_axis
        columns = ("variant", axis, "BASE", "NEW", "NEW/BASE (95% CI)", "p", "n", "verdict", "mem", "err", "acc")
        rows = []
        for item in cells:
            verdict = item.verdict
            if verdict == "n/a" and item.status_note:
                verdict = f"did not run: BASE {item.base_status}, NEW {item.new_status}"
            rows.append((item.series, str(item.length or item.seq_len), format_seconds(item.base_median),
                         format_seconds(item.new_median), _ratio_text(item, compact=True),
                         "–" if item.p_value is None else f"{item.p_value:.2g}",
                         "–" if item.base_reps is None else f"{item.base_reps}/{item.new_reps}",
                         Cell((verdict,), colors.get(item.verdict)), _change(item.memory_ratio),
                         _change(item.error_ratio),
                         Cell((_accuracy_text(item),), "red" if item.inaccurate else None)))
        tables.append(TextTable.of(f"{workload}: {len(cells)} matched cells", columns, rows,
                                   numeric=(axis, "BASE", "NEW", "NEW/BASE (95% CI)", "p", "n", "mem", "err")))
    if comparison.recall:
        rows = []
        for change in comparison.recall:
            verdict = change.verdict if change.verdict != "n/a" else (
                f"BASE {change.base_status}, NEW {change.new_status}")
            rows.append((change.task, change.series, str(change.seq_len), change.width,
                         _recall_text(change.base_recall), _recall_text(change.new_recall),
                         "–" if change.delta is None else f"{change.delta:+.3f}",
                         f"{change.base_seeds}/{change.new_seeds}",
                         Cell((verdict,), {"lower": "red", "higher": "green"}.get(change.verdict))))
        tables.append(TextTable.of("task recall: trained configurations (mean over seeds)",
                                   ("task", "variant", "N", "width", "BASE", "NEW", "change", "seeds", "verdict"),
                                   rows, numeric=("N", "BASE", "NEW", "change")))
    if comparison.environment_diff:
        tables.append(TextTable.of("environment differences", ("key", "BASE", "NEW"), comparison.environment_diff))
    return tables


def _say(console, text: str, style: str | None = None) -> None:
    from rich.text import Text

    console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)


def build_compare_html(comparison: Comparison, gate_lines: list[str] | None = None,
                       gates: list[Gate] | None = None) -> str:
    from attnbench.report import plots

    frame = comparison.frame
    figures = []
    if frame is not None and not frame.empty:
        styles = plots.Styles(list(frame["series"]), list(frame["run"].unique()),
                              kinds=dict(zip(frame["series"], frame["kind"], strict=True)))
        groups = sorted(frame.groupby("workload", sort=True), key=lambda item: -len(item[1]))   # the main sweep first
        for workload, rows in groups:
            if rows["length"].nunique() > 1:
                figures.append({"workload": workload, "uri": plots.time_figure(rows, styles, True)})
            else:
                figures.append({"workload": workload, "uri": None,
                                "note": f"one length measured ({length_text(rows.iloc[0])}): no plot"})
    from attnbench.report.render import render
    from attnbench.report.runcard import when

    return render(
        "compare.html",
        title=f"attnbench compare: {comparison.base.run.name} → {comparison.new.run.name}",
        subtitle=METHOD + ".",
        version=package_version("attnbench") or "unknown",
        built_at=when(dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        base=comparison.base.run, new=comparison.new.run,
        base_label=_run_label(comparison.base), new_label=_run_label(comparison.new),
        base_started=when(comparison.base.run.started_at), new_started=when(comparison.new.run.started_at),
        rows=[_html_row(c) for c in comparison.cells],
        changes=biggest_changes(comparison),
        recall=[_recall_row(c) for c in comparison.recall],
        counts=comparison.counts(),
        threshold=f"{comparison.threshold:.1%}", alpha=f"{comparison.alpha:g}",
        only_base=comparison.only_base, only_new=comparison.only_new,
        environment_diff=comparison.environment_diff,
        figures=figures,
        gates=[str(g) for g in gates or []],
        gate_lines=gate_lines or [],
        method=METHOD,
    )


def biggest_changes(comparison: Comparison, limit: int = 5) -> list[dict[str, str]]:
    """The largest significant slowdowns, then speedups (at most `limit` each), for the page's summary."""
    found = []
    for verdict, reverse in (("slower", True), ("faster", False)):
        cells = sorted((c for c in comparison.cells if c.verdict == verdict and c.ratio is not None),
                       key=lambda c: c.ratio, reverse=reverse)
        found.extend({**_html_row(c), "change": percent_text(c.ratio)} for c in cells[:limit])
    return found


def write_compare_report(comparison: Comparison, output: Path, gate_lines: list[str] | None = None,
                         gates: list[Gate] | None = None) -> Path:
    from attnbench.report.render import write_html

    html = build_compare_html(comparison, gate_lines, gates)
    try:
        return write_html(html, Path(output))
    except OSError as exc:
        raise AttnbenchError(f"cannot write the comparison to {output}: {exc.strerror or exc}; "
                             "choose another path with -o") from None


def _html_row(cell: CellComparison) -> dict[str, str]:
    return {"series": cell.series, "workload": cell.workload, "seq_len": cell.length_text, "label": cell.label,
            "base": format_seconds(cell.base_median), "new": format_seconds(cell.new_median),
            "ratio": _ratio_text(cell), "p": "–" if cell.p_value is None else f"{cell.p_value:.2g}",
            "verdict": cell.verdict, "note": cell.status_note or cell.evidence,
            "accuracy": _accuracy_text(cell),
            "memory": _change(cell.memory_ratio), "error": _change(cell.error_ratio),
            "errors": f"{format_error(cell.base_error)} → {format_error(cell.new_error)}"}


def _recall_row(change: RecallChange) -> dict[str, str]:
    verdict = change.verdict if change.verdict != "n/a" else f"BASE {change.base_status}, NEW {change.new_status}"
    return {"task": change.task, "series": change.series, "seq_len": str(change.seq_len), "width": change.width,
            "base": _recall_text(change.base_recall), "new": _recall_text(change.new_recall),
            "change": "–" if change.delta is None else f"{change.delta:+.3f}",
            "seeds": f"{change.base_seeds}/{change.new_seeds}", "verdict": verdict, "note": change.evidence}


def _recall_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ratio_text(cell: CellComparison, compact: bool = False) -> str:
    if cell.ratio is None:
        return "–"
    if cell.ratio_low is None:
        return f"{cell.ratio:.3f}"
    if compact:
        return f"{cell.ratio:.3f} ({cell.ratio_low:.3f}–{cell.ratio_high:.3f})"
    return f"{cell.ratio:.3f} [{cell.ratio_low:.3f}, {cell.ratio_high:.3f}]"


def _accuracy_text(cell: CellComparison) -> str:
    """'ok', 'INACCURATE', 'fixed' (inaccurate in BASE only) or '–' when not checked."""
    if cell.new_accuracy_ok is False:
        return "INACCURATE"
    if cell.base_accuracy_ok is False and cell.new_accuracy_ok:
        return "fixed"
    return "ok" if cell.new_accuracy_ok else "–"


def _change(ratio: float | None) -> str:
    return "–" if ratio is None else percent_text(ratio)


def _run_label(loaded: LoadedRun) -> str:
    return f"{loaded.run.name} ({loaded.run.run_id})"

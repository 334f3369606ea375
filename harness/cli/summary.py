"""A stored run as terminal tables (`attnbench show`, and the end of `run`): one table per workload and
per task, then the counts by status with the contended and inaccurate cells named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnbench.core.terminal import Cell, TextTable, make_console, print_table, shorten
from attnbench.core.units import finite, format_bytes, format_seconds, kept_timing_text
from attnbench.report.analysis import contended_mask
from attnbench.report.data import KINDS, case_labels, lengths, prepare
from attnbench.report.tables import is_inaccurate, length_headers
from attnbench.store import load_run

STATUS_STYLE = {"ok": "green", "unsupported": "dim", "skipped": "yellow", "oom": "red", "timeout": "red",
                "crashed": "red", "error": "red"}
REASON_CHARS = 48
LISTED = 10


def print_summary(run_path: Path, full: bool = False, console=None) -> None:
    """Tables per workload (variants × swept length): median time ±CI half-width, peak memory, error; then the
    cells by status, naming the contended and inaccurate ones (all of them with `full`, else the first ten)."""
    console = console or make_console()
    loaded = load_run(run_path)
    for problem in loaded.problems:
        _say(console, f"warning: {problem}", "yellow")
    data = prepare([loaded])
    frame = data.frame
    total = len(loaded.cells)
    _say(console, f"run {loaded.run.run_id} ({loaded.run.name}, suite {loaded.run.suite_name}) "
                  f"status {loaded.status}, {total} cells")
    if total == 0:
        _say(console, f"run folder: {run_path}")
        return
    _print_quality(data.tasks, console, full)
    for workload, rows in data.workloads():
        print_table(_workload_table(workload, rows, full), console)
    contended = frame[contended_mask(frame) & (frame["status"] == "ok")] if not frame.empty else frame
    inaccurate = frame[[is_inaccurate(v) for v in frame["accuracy_ok"]]] if not frame.empty else frame
    _say(console, "cells by status: " + _counts(loaded, len(contended), len(inaccurate)))
    labels = case_labels(loaded)
    _list_cells(console, contended, "contended", "yellow", full,
                "timed while the process waited for a CPU; their times are not trusted and not gated",
                lambda r: f"{labels.get(r.case_id, r.case_id)}: {format_seconds(r.time_median_s)}, not trusted")
    _list_cells(console, inaccurate, "inaccurate", "red", full, "error over the variant's declared tolerance",
                lambda r: f"{labels.get(r.case_id, r.case_id)}: {'; '.join(r.accuracy_failures)}")
    _say(console, f"run folder: {run_path}")


def _counts(loaded, contended: int, inaccurate: int) -> str:
    counts: dict[str, int] = {}
    for stored in loaded.cells:
        counts[stored.result.status] = counts.get(stored.result.status, 0) + 1
    flagged = [f"{n} {what}" for n, what in ((contended, "contended"), (inaccurate, "inaccurate")) if n]
    parts = []
    for status, count in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])):
        parts.append(f"{status} {count}" + (f" (of which {', '.join(flagged)})" if status == "ok" and flagged else ""))
    return ", ".join(parts)


def _list_cells(console, rows: pd.DataFrame, what: str, style: str, full: bool, why: str, line) -> None:
    """'contended cells: 2 (why)', then one line per cell: '  contended <case label>: <line(row)>'."""
    if rows.empty:
        return
    _say(console, f"{what} cells: {len(rows)} ({why})", style)
    shown = rows if full else rows.head(LISTED)
    for r in shown.itertuples(index=False):
        _say(console, f"  {what} {line(r)}")
    if len(rows) > len(shown):
        _say(console, f"  ... and {len(rows) - len(shown)} more (attnbench show RUN lists them all)")


def _workload_table(workload: str, rows: pd.DataFrame, full: bool) -> TextTable:
    swept = sorted(int(n) for n in lengths(rows).unique())
    headers = length_headers(rows, str(rows["length_axis"].iloc[0]), swept)
    order = {kind: i for i, kind in enumerate(KINDS)}
    series = sorted(rows.groupby("series", sort=False), key=lambda item: (order.get(item[1]["kind"].iloc[0], 9),
                                                                             str(item[0])))
    body = []
    for name, group in series:
        by_length = {int(r.length): r for r in group.itertuples(index=False)}
        body.append([Cell((str(name),)), *[_cell(by_length[n], full) if n in by_length else Cell() for n in swept]])
    return TextTable.of(workload, ["variant", *headers], body, numeric=headers)


def _cell(row, full: bool) -> Cell:
    if row.status != "ok":
        reason = str(row.reason or "")
        if row.status == "unsupported" and not full:
            reason = ""
        lines = [f"{row.status}: {reason if full else shorten(reason, REASON_CHARS)}" if reason else str(row.status)]
        kept = kept_timing_text(row.status, row.time_median_s)
        return Cell(tuple(lines + ([kept] if kept else [])), STATUS_STYLE.get(row.status, "red"))
    low, high, median = finite(row.time_ci_low_s), finite(row.time_ci_high_s), finite(row.time_median_s)
    if low is not None and high is not None and median:
        lines = [f"{format_seconds(median)} ±{(high - low) / 2 / median * 100:.1f}%"]
    else:
        reps = finite(row.reps)
        lines = [f"{format_seconds(median)} (n={int(reps) if reps is not None else '?'}, no interval)"]
    if finite(row.peak_bytes) is not None:
        lines.append(format_bytes(row.peak_bytes))
    error = finite(row.rel_l2_error)
    if error is not None:
        approx = finite(row.approx_rel_l2_error) if row.kind == "approximate" else None
        lines.append(f"err {error:.1e}" + (f" (vs exact {approx:.2g})" if approx is not None else ""))
    style = None
    if contended_mask(pd.DataFrame([{"contended": row.contended}]))[0]:
        lines.append("contended")
        style = "yellow"
    if is_inaccurate(row.accuracy_ok):
        lines.append("inaccurate")
        style = "red"
    return Cell(tuple(lines), style)


def _print_quality(summary: pd.DataFrame, console, full: bool) -> None:
    """Quality cells (`recall_summary` rows): per task and width, recall (mean over seeds, with their range) per
    series and seq_len."""
    if summary.empty:
        return
    keys = ["task", "device", "dtype", "batch", "heads", "head_dim"]
    for key, group in summary.groupby(keys, sort=True, dropna=False):
        task, device, dtype, batch, heads, head_dim = key
        title = (f"recall: {task.partition(':')[0]} ({task.partition(':')[2]}), {device} {dtype}, "
                 f"batch {batch}, d_model {heads * head_dim} = {heads}×{head_dim}")
        swept = sorted(int(n) for n in group.seq_len.unique())
        headers = [f"N={n}" for n in swept]
        body = []
        for label, rows in group.groupby("series", sort=True):
            by_length = {int(r.seq_len): r for r in rows.itertuples()}
            body.append([label, *[_quality_cell(by_length[n], full) if n in by_length else Cell() for n in swept]])
        print_table(TextTable.of(title, ["variant", *headers], body, numeric=headers), console)


def _quality_cell(row, full: bool) -> Cell:
    if row.status != "ok":
        reason = str(row.reason or "")
        text = f"{row.status}: {reason if full else shorten(reason, REASON_CHARS)}" if reason else str(row.status)
        return Cell((text,), STATUS_STYLE.get(row.status, "red"))
    first = f"recall {row.recall:.3f}"
    lines = []
    if row.seeds_ok > 1:
        lines.append(f"{row.recall_min:.3f}–{row.recall_max:.3f} ({row.seeds_ok} seeds)")
    elif row.seeds > row.seeds_ok:
        first += f" ({row.seeds_ok}/{row.seeds} seeds)"
    lines.append(f"loss {row.loss_last:.3f}, {format_seconds(row.train_s)} train")
    if finite(row.state_size) is not None:
        lines.append(f"state {int(row.state_size):,}")
    if finite(row.time_median_s) is not None:
        lines.append(f"call {format_seconds(row.time_median_s)}")
    return Cell((first, *lines))


def _say(console, text: str, style: str | None = None) -> None:
    """One line of plain text (never markup), unwrapped."""
    from rich.text import Text

    console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)

"""Tables of a report: numbers formatted for people, and the per-workload grids."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attnbench.core.units import finite, format_bytes, format_seconds, kept_timing_text
from attnbench.report.data import (
    KIND_TITLES,
    KINDS,
    ReportData,
    length_axis,
    length_text,
    lengths,
    seq_len_text,
    status_text,
)


def format_rate(value: Any, unit: str = "FLOP/s") -> str:
    number = finite(value)
    if number is None:
        return "–"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.3g} {prefix}{unit}"
    return f"{number:.3g} {unit}"


def format_error(value: Any) -> str:
    number = finite(value)
    return "–" if number is None else f"{number:.2g}"


def format_value(value: Any) -> str:
    """An environment or calibration value as text: nested data as compact JSON."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return "" if value is None else str(value)


@dataclass
class GridCell:
    status: str
    lines: list[str] = field(default_factory=list)
    title: str = ""


@dataclass
class WorkloadTable:
    """One workload: a row per series (and run), a column per swept length (seq_len, or kv_len for a fixed
    query length); a memory-bound workload (`ReportData.memory_bound`) whose cells carry their traffic
    (`bytes_per_s`, stored since the traffic columns) `shows_traffic` in each cell."""

    workload: str
    lengths: list[int]
    length_axis: str
    headers: list[str]
    rows: list[tuple[str, str, list[GridCell]]]
    shows_traffic: bool = False
    kinds: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """Per row, the title of its kind where a new kind starts (exact, approximations, other), else ''."""
        titles, previous = [], None
        for kind in self.kinds or [""] * len(self.rows):
            titles.append(KIND_TITLES.get(kind, "") if kind != previous else "")
            previous = kind
        return titles


def workload_table(data: ReportData, workload: str, rows: pd.DataFrame) -> WorkloadTable:
    axis = length_axis(rows)
    swept = sorted(int(n) for n in lengths(rows).unique())
    traffic = data.memory_bound(rows) and pd.to_numeric(rows["bytes_per_s"], errors="coerce").notna().any()
    order = {kind: i for i, kind in enumerate(KINDS)}
    groups = sorted(rows.groupby(["series", "run"], sort=False),
                    key=lambda item: order.get(str(item[1]["kind"].iloc[0]) if "kind" in item[1] else "", 0))
    table_rows, kinds = [], []
    for (series, run), group in groups:
        by_len = {int(r.length): r for r in group.itertuples(index=False)}
        cells = [_grid_cell(by_len.get(n), traffic) for n in swept]
        table_rows.append((series, run if data.multi_run else "", cells))
        kinds.append(str(group["kind"].iloc[0]) if "kind" in group else "")
    return WorkloadTable(workload=workload, lengths=swept, length_axis=axis, headers=length_headers(rows, axis, swept),
                         rows=table_rows, shows_traffic=bool(traffic), kinds=kinds)


def length_headers(rows: pd.DataFrame, axis: str, swept: list[int]) -> list[str]:
    """'N=1024' for seq_len (as it always was), 'kv_len=4096'; with the batch where it changes with the length
    (a batch that a fixed KV-cache size derives)."""
    name = "N" if axis == "seq_len" else axis
    batches = {n: sorted({int(b) for b in rows.loc[lengths(rows) == n, "batch"]}) for n in swept}
    varying = len({tuple(b) for b in batches.values()}) > 1
    return [f"{name}={n}" + (" · batch " + "/".join(map(str, batches[n])) if varying else "") for n in swept]


def _grid_cell(row: Any, traffic: bool = False) -> GridCell:
    if row is None:
        return GridCell(status="absent", lines=["–"], title="not in this run's sweep")
    if row.status != "ok":
        kept = kept_timing_text(row.status, row.time_median_s)
        return GridCell(status=str(row.status), lines=[status_text(row.status, row.reason), *([kept] if kept else [])])
    lines = [format_seconds(row.time_median_s)]
    title = ""
    if finite(row.time_ci_low_s) is not None and finite(row.time_ci_high_s) is not None:
        lines[0] += f" [{format_seconds(row.time_ci_low_s)}, {format_seconds(row.time_ci_high_s)}]"
        title = "median time per call [95% interval of the median]"
    elif finite(row.reps) is not None:
        lines[0] += f" (n={int(row.reps)}, no interval)"
        title = "median time per call; too few samples for a 95% interval of the median"
    lines.append(f"mem {format_bytes(row.peak_bytes)}")
    if traffic and finite(row.bytes_per_s) is not None:
        lines.append(traffic_text(row))
    error = f"err {format_error(row.rel_l2_error)}"
    if row.is_approximate and finite(row.approx_rel_l2_error) is not None:
        error += f" · vs exact {format_error(row.approx_rel_l2_error)}"
    lines.append(error)
    if is_inaccurate(row.accuracy_ok):
        lines.append("inaccurate: over its tolerance")
        return GridCell(status="error inaccurate", lines=lines, title="; ".join(row.accuracy_failures))
    return GridCell(status="ok", lines=lines, title=title)


def traffic_text(row: Any) -> str:
    """'moves 16 MiB · 5 GB/s · 50% of copy bw': the least bytes a call moves, at the median time."""
    text = f"moves {format_bytes(row.bytes_moved)} · {format_rate(row.bytes_per_s, 'B/s')}"
    fraction = finite(row.bandwidth_fraction)
    return text + (f" · {fraction:.0%} of copy bw" if fraction is not None else " · no calibrated bw")


def is_inaccurate(accuracy_ok: Any) -> bool:
    """True only for a stored verdict of False (None or NaN: accuracy not judged)."""
    return accuracy_ok is not None and accuracy_ok == accuracy_ok and not bool(accuracy_ok)


def inaccurate_cells(data: ReportData) -> list[dict[str, Any]]:
    """Every cell whose error is over its variant's declared tolerance: one row per failed bound."""
    frame = data.frame
    if frame.empty:
        return []
    rows = []
    for r in frame[[is_inaccurate(v) for v in frame["accuracy_ok"]]].itertuples(index=False):
        case = f"{r.workload} · {length_text(r)}"
        for failure in r.accuracy_failures or ("over its tolerance",):
            metric, error, tolerance = _failure_parts(failure)
            rows.append({"cell": f"{r.run_index}:{r.case_id}", "run": r.run, "series": r.series, "case": case,
                         "status": r.status,
                         "metric": metric, "error": error, "tolerance": tolerance})
    return rows


def _failure_parts(failure: str) -> tuple[str, str, str]:
    """'output rel_l2 1.0e-02 > 5.0e-06 (float32 tolerance of x)' -> ('output rel_l2', '1.0e-02', '5.0e-06 (...)')."""
    head, sep, bound = failure.partition(" > ")
    if not sep:
        return failure, "", ""
    metric, _, error = head.rpartition(" ")
    return metric, error, bound


def failures(data: ReportData) -> list[dict[str, Any]]:
    """Every cell that did not give a measurement, with its reason."""
    frame = data.frame
    if frame.empty:
        return []
    failed = frame[frame["status"] != "ok"]
    return [{"run": r.run, "series": r.series, "workload": r.workload, "seq_len": int(r.seq_len),
             "seq_len_text": seq_len_text(r), "status": r.status, "reason": r.reason or ""}
            for r in failed.itertuples(index=False)]

"""Derived findings: where sub-quadratic variants overtake the baseline, and quality against cost.

A cell measured while the process was descheduled (the frame's ``contended``
column, see attnbench.measure.contention) is left out of every time crossover:
its length counts for neither side. `contended_cells` lists those cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnbench.core.units import format_seconds
from attnbench.report.data import ReportData, length_axis, seq_len_text
from attnbench.report.fits import crossover, pareto_frontier
from attnbench.report.tables import format_error


@dataclass(frozen=True)
class Crossover:
    workload: str
    series: str
    run: str
    faster_from: str
    smaller_from: str
    measured: str


def crossovers(data: ReportData) -> tuple[list[Crossover], list[str]]:
    """For every sub-quadratic series against the baseline (same run, same workload): the length
    from which it is faster, and from which it needs less memory, at every longer measured length
    (the workload's swept length: seq_len, or kv_len for a fixed query length).
    Returns the rows and notes on workloads that could not be compared.
    """
    results: list[Crossover] = []
    notes: list[str] = []
    if data.baseline is None:
        return results, [data.baseline_note]
    for workload, rows in data.workloads():
        candidates = rows[rows["is_subquadratic"] & (rows["variant"] != data.baseline)]
        if candidates.empty:
            continue
        axis = length_axis(rows)
        for run, run_rows in rows.groupby("run", sort=False):
            base = run_rows[run_rows["variant"] == data.baseline]
            if base.empty:
                notes.append(f"{workload}{' · ' + str(run) if data.multi_run else ''}: "
                             f"the baseline {data.baseline} was not in this workload, so no crossover")
                continue
            base_by_len = {int(r.length): r for r in base.itertuples(index=False)}
            for series, group in run_rows[run_rows.index.isin(candidates.index)].groupby("series", sort=False):
                by_len = {int(r.length): r for r in group.itertuples(index=False)}
                lengths = sorted(set(by_len) | set(base_by_len))
                timed = [n for n in lengths if not (_contended(by_len.get(n)) or _contended(base_by_len.get(n)))]
                time_from = crossover(timed, [_ok(by_len.get(n), "time_median_s") for n in timed],
                                      [_ok(base_by_len.get(n), "time_median_s") for n in timed])
                if len(timed) < len(lengths):
                    left_out = ", ".join(str(n) for n in lengths if n not in timed)
                    notes.append(f"{workload} · {series}{' · ' + str(run) if data.multi_run else ''}: "
                                 f"{axis} {left_out} left out of the time crossover (contended: measured "
                                 "while descheduled)")
                memory_from = crossover(lengths, [_ok(by_len.get(n), "peak_bytes") for n in lengths],
                                        [_ok(base_by_len.get(n), "peak_bytes") for n in lengths])
                results.append(Crossover(
                    workload=workload, series=str(series), run=str(run) if data.multi_run else "",
                    faster_from=_from_text(time_from, axis), smaller_from=_from_text(memory_from, axis),
                    measured=f"{lengths[0]}…{lengths[-1]} ({len(lengths)} lengths)",
                ))
    return results, notes


def is_contended(value) -> bool:
    """A `contended` cell of the tidy frame: True only for a stored True (None, NaN and False are not)."""
    return value is True or (isinstance(value, (bool, np.bool_)) and bool(value))


def contended_mask(rows: pd.DataFrame) -> np.ndarray:
    """Per row, whether the cell was contended; all False for frames without the column."""
    if "contended" not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return np.array([is_contended(v) for v in rows["contended"]], dtype=bool)


def _contended(row) -> bool:
    return row is not None and row.status == "ok" and is_contended(getattr(row, "contended", None))


def contended_cells(data: ReportData) -> list[dict[str, str]]:
    """The cells that stayed contended after their re-measures, for the report's list of them.

    One dict per cell: workload, series, run (empty for one run), seq_len, the
    text of its seq_len column (`seq_len_text`: with the kv_len where that is swept),
    the median time it was stored with, and the contention warning it carries.
    """
    frame = data.frame
    if frame.empty:
        return []
    listed = []
    for r in frame[contended_mask(frame)].itertuples(index=False):
        warning = next((w for w in _warnings(r) if str(w).startswith("contended")), "")
        listed.append({"workload": str(r.workload), "series": str(r.series),
                       "run": str(r.run) if data.multi_run else "", "seq_len": str(int(r.seq_len)),
                       "seq_len_text": seq_len_text(r),
                       "time": format_seconds(r.time_median_s) if not pd.isna(r.time_median_s) else "",
                       "warning": warning})
    return listed


def _warnings(row) -> list:
    """The tidy frame joins a cell's warnings with '; ' (the contention warning holds none)."""
    value = getattr(row, "warnings", None)
    if isinstance(value, str):
        return value.split("; ") if value else []
    return list(value) if isinstance(value, (list, tuple)) else []


def _ok(row, column: str) -> float | None:
    if row is None or row.status != "ok":
        return None
    value = getattr(row, column)
    return None if value is None or pd.isna(value) else float(value)


def _from_text(length: int | None, axis: str) -> str:
    return "never in this range" if length is None else f"from {axis} {length}"


@dataclass(frozen=True)
class QualityView:
    """One workload's approximate variants at one swept length: the points and the frontier."""

    workload: str
    length: int
    length_axis: str
    points: pd.DataFrame
    baseline_times: dict[str, float]
    frontier: list[dict[str, str]]

    @property
    def seq_len(self) -> int:
        """The query length of the points (the swept length too, unless `length_axis` is kv_len)."""
        return int(self.points["seq_len"].iloc[0])


def quality_views(data: ReportData) -> list[QualityView]:
    """Per workload, at the largest swept length where an approximate variant has an error against exact."""
    views = []
    for workload, rows in data.workloads():
        approx = rows[(rows["status"] == "ok") & rows["is_approximate"]
                      & pd.to_numeric(rows["approx_rel_l2_error"], errors="coerce").notna()
                      & pd.to_numeric(rows["time_median_s"], errors="coerce").notna()]
        if approx.empty:
            continue
        length = int(approx["length"].max())
        points = approx[approx["length"] == length].copy()
        points["time_median_s"] = points["time_median_s"].astype(float)
        points["approx_rel_l2_error"] = points["approx_rel_l2_error"].astype(float)
        baseline_times = {}
        if data.baseline is not None:
            base = rows[(rows["variant"] == data.baseline) & (rows["status"] == "ok") & (rows["length"] == length)]
            baseline_times = {str(r.run): float(r.time_median_s) for r in base.itertuples(index=False)
                              if not pd.isna(r.time_median_s)}
        frontier_rows = []
        for run, group in points.groupby("run", sort=False):
            for index in pareto_frontier(list(group["time_median_s"]), list(group["approx_rel_l2_error"])):
                r = group.iloc[index]
                frontier_rows.append({"series": str(r["series"]), "run": str(run) if data.multi_run else "",
                                      "time": format_seconds(r["time_median_s"]),
                                      "error": format_error(r["approx_rel_l2_error"]),
                                      "kl": format_error(r.get("approx_kl")),
                                      "topk": format_error(r.get("approx_topk_mass"))})
        views.append(QualityView(workload=workload, length=length, length_axis=length_axis(rows), points=points,
                                 baseline_times=baseline_times, frontier=frontier_rows))
    return views

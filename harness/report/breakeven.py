"""Setup against per-call time: after how many calls a faster but slower-to-set-up variant pays off.

A variant that compiles (flex, longformer-flex; mamba-scan where its C scan does not run) or builds a block
mask pays `setup_s` once and then saves (baseline time − its time) on every
call. For each ok cell faster than the baseline's cell of the same workload,
run and length but slower to set up, the break-even count is the smallest n
with setup + n·time <= baseline setup + n·baseline time:
n = ceil((setup − baseline setup) / (baseline time − time)). Contended cells
are left out (their times are not the kernel's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from attnbench.core.units import format_seconds
from attnbench.report.data import ReportData

SETUP_PARTS = (("setup_compile_s", "compile"), ("setup_prepare_s", "prepare"), ("setup_first_call_s", "first call"))


@dataclass(frozen=True)
class BreakEven:
    """One row of the report's setup table (texts, ready to show)."""

    workload: str
    series: str
    run: str
    length: str
    time: str
    setup: str
    baseline_time: str
    baseline_setup: str
    calls: int


def break_even_calls(setup_s: float, time_s: float, base_setup_s: float, base_time_s: float) -> int | None:
    """Calls after which the variant's total time is at most the baseline's; None unless it is faster
    per call and slower to set up."""
    if not (time_s < base_time_s and setup_s > base_setup_s):
        return None
    return max(1, math.ceil((setup_s - base_setup_s) / (base_time_s - time_s)))


def setup_text(row: Any) -> str:
    """'12.3 s (compile 11.9 s, prepare 0.2 s, first call 0.2 s)', or the total alone for cells without parts."""
    total = format_seconds(row.setup_s)
    parts = [(label, getattr(row, column, None)) for column, label in SETUP_PARTS]
    shown = [f"{label} {format_seconds(value)}" for label, value in parts if _number(value)]
    return f"{total} ({', '.join(shown)})" if shown else total


def break_even_rows(data: ReportData) -> list[BreakEven]:
    """Every cell faster than the baseline's and slower to set up, with its break-even call count."""
    rows: list[BreakEven] = []
    if data.baseline is None:
        return rows
    for workload, frame in data.workloads():
        ok = frame[(frame["status"] == "ok") & (frame["contended"] != True)]  # noqa: E712 (None is not contended)
        for run, run_rows in ok.groupby("run", sort=False):
            base = {int(r.length): r for r in run_rows[run_rows["variant"] == data.baseline].itertuples(index=False)}
            for row in run_rows[run_rows["variant"] != data.baseline].itertuples(index=False):
                ref = base.get(int(row.length))
                if ref is None or not all(_number(v) for v in (row.setup_s, row.time_median_s, ref.setup_s,
                                                                ref.time_median_s)):
                    continue
                calls = break_even_calls(row.setup_s, row.time_median_s, ref.setup_s, ref.time_median_s)
                if calls is None:
                    continue
                rows.append(BreakEven(workload=workload, series=str(row.series), run=str(run) if data.multi_run else "",
                                      length=f"{row.length_axis} {int(row.length)}",
                                      time=format_seconds(row.time_median_s), setup=setup_text(row),
                                      baseline_time=format_seconds(ref.time_median_s),
                                      baseline_setup=setup_text(ref), calls=calls))
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)

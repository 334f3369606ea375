"""The tidy DataFrame: one row per stored cell, the table every export, table and plot reads.

Imports pandas when called, never torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from attnbench.core.axes import AXES, value_of
from attnbench.core.metrics import METRICS
from attnbench.store.runs import Cell, LoadedRun

IDENTITY_COLUMNS = ("run_id", "run_name", "case_id", "variant", "family", "computes", "approximates", "params")


def tidy_columns() -> tuple[str, ...]:
    """The frame's columns: the cell's identity, one per case axis (`AXES`), its status, one per metric (`METRICS`)."""
    axes = tuple(axis.name for axis in AXES.case_axes())
    return IDENTITY_COLUMNS + axes + ("task_kind", "status", "reason") + METRICS.names()


TIDY_COLUMNS = tidy_columns()  # the built-in columns; `tidy_columns()` adds metrics registered later


def tidy_frame(runs: Iterable[LoadedRun]):
    """One row per cell of every run, with the columns of `tidy_columns()` plus one `param_<knob>` per knob."""
    import pandas as pd

    rows = [_tidy_row(loaded, cell) for loaded in runs for cell in loaded.cells]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(tidy_columns()))
    knob_columns = sorted(c for c in frame.columns if c.startswith("param_"))
    return frame[list(tidy_columns()) + knob_columns]


def _tidy_row(loaded: LoadedRun, cell: Cell) -> dict[str, Any]:
    case, result = cell.case, cell.result
    params = case.get("params") or {}
    row: dict[str, Any] = {
        "run_id": loaded.run.run_id,
        "run_name": loaded.run.name,
        "case_id": cell.case_id,
        "variant": case.get("variant"),
        "family": cell.meta.get("family"),
        "computes": cell.meta.get("computes"),
        "approximates": cell.meta.get("approximates"),
        "params": json.dumps(params, sort_keys=True),
        **{axis.name: value_of(case, axis.name) for axis in AXES.case_axes()},
        "task_kind": str(value_of(case, "task")).partition(":")[0],
        "status": result.status,
        "reason": result.reason,
        **{metric.name: metric.read(result) for metric in METRICS},
    }
    for knob, value in params.items():
        row[f"param_{knob}"] = value
    return row

"""The report's ragged-batch section: time against padding_waste and imbalance, per backend.

One view per batch shape (heads, head dims, seq_len, kv_len, batch, causal) that
has ragged cells (a `padding_waste` figure): a figure with two panels, median
time against padding_waste (left) and against imbalance (right), one marker and
colour per backend (variant and layout), each point named by its `lengths`; and
its table, one row per cell. No torch: it reads the tidy frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attnbench.report.backend import Figure
from attnbench.report.plot_style import MARKERS, kind_palette, text, to_data_uri

SHAPE = ("heads", "kv_heads", "head_dim", "v_head_dim", "seq_len", "kv_len", "batch", "causal", "dtype", "device")


@dataclass(frozen=True)
class RaggedView:
    """One batch shape's ragged cells: its title, the figure's data URI and the table's rows."""

    title: str
    uri: str
    rows: list[dict[str, Any]]


def ragged_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured ragged cells of the frame (status ok, with a padding_waste), with a `backend` column."""
    if frame.empty or "padding_waste" not in frame.columns:
        return frame.iloc[0:0]
    cells = frame[(frame["status"] == "ok") & pd.to_numeric(frame["padding_waste"], errors="coerce").notna()].copy()
    cells["backend"] = cells["variant"].astype(str) + " " + cells["layout"].astype(str)
    return cells


def ragged_views(frame: pd.DataFrame) -> list[RaggedView]:
    """A `RaggedView` per batch shape with ragged cells, the shape with the most cells first."""
    cells = ragged_cells(frame)
    if cells.empty:
        return []
    views = []
    for key, group in cells.groupby(list(SHAPE), sort=True, dropna=False):
        shape = dict(zip(SHAPE, key, strict=True))
        title = (f"B{shape['batch']} H{shape['heads']}/{shape['kv_heads']} d{shape['head_dim']} "
                 f"N{shape['seq_len']} M{shape['kv_len']} {'causal' if shape['causal'] else 'full'} "
                 f"{shape['dtype']} {shape['device']}")
        views.append((-len(group), title, group))
    return [RaggedView(title, ragged_figure(group, title), ragged_table(group))
            for _size, title, group in sorted(views, key=lambda v: v[:2])]


def ragged_table(group: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of the view's table, by lengths then time: lengths, backend, how it ran, time, waste, imbalance."""
    rows = []
    for r in group.sort_values(["lengths", "time_median_s"]).itertuples(index=False):
        rows.append({"lengths": r.lengths, "backend": r.backend, "execution": r.execution or "",
                     "time": f"{r.time_median_s * 1e3:.2f} ms", "padding_waste": f"{r.padding_waste:.2f}",
                     "imbalance": f"{r.imbalance:.2f}",
                     "accuracy_ok": {True: "yes", False: "no"}.get(r.accuracy_ok, "")})
    return rows


def ragged_figure(group: pd.DataFrame, title: str = "") -> str:
    """Median time against padding_waste and against imbalance, a marker per backend, points named by lengths."""
    fig = Figure(figsize=(10.5, 4.4))
    if title:
        fig.suptitle(text(title), fontsize=9)
    backends = sorted(group["backend"].unique())
    colours = kind_palette("exact")
    for column, left in (("padding_waste", 0.08), ("imbalance", 0.50)):
        ax = fig.add_axes((left, 0.13, 0.31, 0.72))
        for i, backend in enumerate(backends):
            part = group[group["backend"] == backend]
            x = pd.to_numeric(part[column], errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(part["time_median_s"], errors="coerce").to_numpy(dtype=float)
            ax.scatter(x, y, marker=MARKERS[i % len(MARKERS)], color=colours[i % len(colours)], s=36,
                       label=text(backend))
            for xi, yi, lengths in zip(x, y, part["lengths"], strict=True):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(text(lengths), (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points",
                                color="0.35")
        ax.set_yscale("log")
        ax.set_xlabel(column.replace("_", " ") + (" (executed / useful pairs)" if column == "padding_waste"
                                                  else " (longest / mean sequence's pairs)"))
        ax.set_ylabel("median time per call (s)")
        ax.set_title(text(f"time against {column.replace('_', ' ')}"), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return to_data_uri(fig)

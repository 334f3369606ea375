"""Figures of a report, drawn with matplotlib (Agg) and seaborn, returned as inline PNG data URIs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from attnbench.report.analysis import contended_mask
from attnbench.report.backend import Figure, sns
from attnbench.report.data import length_axis, lengths
from attnbench.report.fits import loglog_slope
from attnbench.report.plot_style import (
    LINESTYLES,
    PLAIN,
    Styles,
    add_legend,
    empty_panel,
    finish_panel,
    label_lines,
    log_axes,
    plain_log,
    positive_values,
    series_groups,
    series_label,
    short,
    text,
    to_data_uri,
)
from attnbench.report.quality_plots import attention_maps_figure, quality_figure, task_figure  # noqa: F401

__all__ = ["Styles", "attention_maps_figure", "quality_figure", "task_figure"]


def scaling_panel(ax, rows: pd.DataFrame, column: str, styles: Styles, multi_run: bool,
                  ylabel: str, title: str, interval: tuple[str, str] | None = None,
                  timed: bool = False) -> bool:
    """`column` against the swept length (seq_len or kv_len) on log-log axes, each series labelled with its fitted slope.

    With `timed` (a time or a rate from it), contended cells (measured while
    descheduled) are drawn as hollow markers off the line and left out of
    the slope and the interval band.
    """
    ok = rows[rows["status"] == "ok"]
    drawn = hollow = False
    for series, run, group in series_groups(ok):
        swept, values, measured, contended, mask = _points(group, column, timed)
        if not measured.any():
            continue
        slope = loglog_slope(swept[mask], values[mask])
        slope_text = f"slope {slope:.2f}" if slope is not None else ("one point" if mask.any() else "no slope")
        style = styles.line(series, run)
        ax.plot(swept[mask], values[mask], label=text(f"{series_label(series, run, multi_run)} ({slope_text})"),
                markersize=4, linewidth=1.4, **style)
        hollow |= _hollow(ax, swept[contended], values[contended], style)
        if interval is not None:
            low, high = positive_values(group[interval[0]]), positive_values(group[interval[1]])
            band = mask & np.isfinite(low) & np.isfinite(high)
            if band.any():
                ax.fill_between(swept[band], low[band], high[band], color=style["color"], alpha=0.18, linewidth=0)
        drawn = True
    _hollow_legend(ax, hollow)
    finish_panel(ax, rows, drawn, f"no {ylabel} measured", ylabel, title)
    return drawn


def _points(group: pd.DataFrame, column: str, timed: bool = True):
    """One series' (lengths, positive values, measured, contended, kept): kept is measured and not contended.

    Without `timed` no cell counts as contended (a figure that does not come from a time).
    """
    values = positive_values(group[column])
    swept = lengths(group).to_numpy(dtype=float)
    measured = np.isfinite(values)
    contended = measured & contended_mask(group) if timed else np.zeros(len(group), dtype=bool)
    return swept, values, measured, contended, measured & ~contended


def _hollow(ax, swept: np.ndarray, values: np.ndarray, style: dict[str, Any]) -> bool:
    """Contended cells: hollow markers in the series' colour, not joined to its line."""
    if not len(swept):
        return False
    ax.plot(swept, values, linestyle="none", marker=style["marker"], markersize=7, markerfacecolor="none",
            markeredgecolor=style["color"], markeredgewidth=1.2)
    return True


def _hollow_legend(ax, drawn: bool) -> None:
    if drawn:
        ax.plot([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none", markeredgecolor="black",
                label="hollow: contended (descheduled), not in the slope")


def _rate_lines(ax, rows: pd.DataFrame, column: str, styles: Styles, multi_run: bool) -> bool:
    """`column` per series against the swept length, contended cells hollow; whether anything was drawn."""
    ok = rows[rows["status"] == "ok"]
    drawn = hollow = False
    for series, run, group in series_groups(ok):
        swept, values, measured, contended, mask = _points(group, column)
        if measured.any():
            style = styles.line(series, run)
            ax.plot(swept[mask], values[mask], label=text(series_label(series, run, multi_run)), markersize=4,
                    linewidth=1.4, **style)
            hollow |= _hollow(ax, swept[contended], values[contended], style)
            drawn = True
    _hollow_legend(ax, hollow)
    return drawn


def flops_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool, peaks: dict[str, float]) -> None:
    drawn = _rate_lines(ax, rows, "flops_per_s", styles, multi_run)
    for run, peak in peaks.items():
        ax.axhline(peak, color="black", linestyle=LINESTYLES[styles.runs.get(run, 0) % 4], linewidth=1,
                   label=text(f"measured peak{' · ' + run if multi_run else ''}"))
    finish_panel(ax, rows, drawn, "no FLOP counts in these cells", "achieved FLOP/s",
                  "Achieved FLOP/s" + ("" if peaks else " (not calibrated: no peak line)"))


def bandwidth_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool) -> bool:
    """The fraction of the run's copy bandwidth each cell's least traffic achieves (`bandwidth_fraction`),
    on a linear axis with 1 drawn; achieved bytes/s on log axes where no run is calibrated.

    What a decode step is bound by, in place of its FLOP/s (the roofline keeps those).
    """
    fractions = pd.to_numeric(rows.loc[rows["status"] == "ok", "bandwidth_fraction"], errors="coerce")
    if not fractions.notna().any():
        drawn = _rate_lines(ax, rows, "bytes_per_s", styles, multi_run)
        finish_panel(ax, rows, drawn, "no traffic (bytes_per_s) in these cells", "achieved bytes/s",
                      "Achieved bandwidth (not calibrated: no copy bandwidth)")
        return drawn
    drawn = _rate_lines(ax, rows, "bandwidth_fraction", styles, multi_run)
    ax.axhline(1.0, color="black", linewidth=1, label="calibrated copy bandwidth")
    log_axes(ax, lengths(rows).unique())
    ax.set_yscale("linear")
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.set_ylim(0, max(1.1, float(fractions.max()) * 1.1))
    add_legend(ax)
    ax.set_xlabel(length_axis(rows))
    ax.set_ylabel("fraction of copy bandwidth")
    ax.set_title("Bandwidth: least bytes moved / time / copy bandwidth", fontsize=10)
    return drawn


ERROR_LINES = (("rel_l2_error", "", "-"), ("approx_rel_l2_error", " vs exact", "--"))


def error_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool, approx_only: bool = False) -> None:
    """Each series' error against its own reference (solid) and, for approximations, against exact softmax
    (dashed); with `approx_only`, only the latter, labelled by the series alone."""
    ok = rows[rows["status"] == "ok"]
    drawn, zeros = False, False
    lines = ((ERROR_LINES[1][0], "", "-"),) if approx_only else ERROR_LINES
    for series, run, group in series_groups(ok):
        swept = lengths(group).to_numpy(dtype=float)
        style = styles.line(series, run)
        for column, suffix, linestyle in lines:
            if column == "approx_rel_l2_error" and not bool(group["is_approximate"].any()):
                continue
            raw = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
            zeros |= bool((raw == 0).any())
            values = positive_values(raw)
            mask = np.isfinite(values)
            if mask.any():
                ax.plot(swept[mask], values[mask], label=text(series_label(series, run, multi_run) + suffix),
                        markersize=4, linewidth=1.2, **{**style, "linestyle": linestyle})
                drawn = True
    title = "Error against exact softmax" if approx_only else "Error (solid: own reference; dashed: vs exact softmax)"
    finish_panel(ax, rows, drawn, "no errors measured", "relative L2 error",
                  title + (" · exact zeros not drawn" if zeros else ""))


def speedup_matrix(rows: pd.DataFrame, baseline: str | None, multi_run: bool) -> pd.DataFrame | None:
    """baseline time / time per series (rows) and swept length (columns), within each run; None without a baseline."""
    if baseline is None:
        return None
    ok = rows[rows["status"] == "ok"]
    base = ok[ok["variant"] == baseline]
    if base.empty:
        return None
    axis = length_axis(rows)
    base_time = base.assign(swept=lengths(base)).groupby(["run", "swept"])["time_median_s"].first()
    records = []
    for r, n in zip(ok.itertuples(index=False), lengths(ok), strict=True):
        reference = base_time.get((r.run, n))
        if reference is None or not r.time_median_s or not np.isfinite(r.time_median_s):
            continue
        records.append({"row": series_label(r.series, r.run, multi_run), axis: int(n),
                        "speedup": float(reference) / float(r.time_median_s)})
    if not records:
        return None
    table = pd.DataFrame(records).pivot_table(index="row", columns=axis, values="speedup", aggfunc="first", sort=False)
    return table


def speedup_panel(ax, rows: pd.DataFrame, baseline: str | None, multi_run: bool) -> None:
    table = speedup_matrix(rows, baseline, multi_run)
    if table is None:
        empty_panel(ax, f"baseline {baseline!s} not measured in this workload" if baseline else "no baseline")
        ax.set_title("Speedup over the baseline", fontsize=10)
        return
    table.index = [text(short(i, 32)) for i in table.index]
    annotations = table.map(lambda v: "" if pd.isna(v) else f"{v:.2g}")
    with warnings.catch_warnings():   # seaborn 0.13 calls a colormap method newer matplotlib deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(np.log2(table.astype(float)), ax=ax, cmap="RdBu", center=0, annot=annotations, fmt="",
                    annot_kws={"fontsize": 7}, cbar_kws={"label": "log2 speedup (blue: faster)"}, linewidths=0.5)
    ax.set_xlabel(length_axis(rows))
    ax.set_ylabel("")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(text(f"Speedup over {baseline} (its time / this time)"), fontsize=10)


def roofline_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool, peak_flops: float | None,
                   bandwidth: float | None) -> bool:
    ok = rows[(rows["status"] == "ok")]
    intensity = pd.to_numeric(ok["arithmetic_intensity"], errors="coerce")
    if peak_flops is None or bandwidth is None or not intensity.notna().any():
        return False
    drawn = False
    for series, run, group in series_groups(ok):
        x = positive_values(group["arithmetic_intensity"])
        y = positive_values(group["flops_per_s"])
        mask = np.isfinite(x) & np.isfinite(y)
        if mask.any():
            style = styles.line(series, run)
            ax.scatter(x[mask], y[mask], color=style["color"], marker=style["marker"], s=18,
                       label=text(series_label(series, run, multi_run)))
            drawn = True
    if not drawn:
        return False
    xs = positive_values(ok["arithmetic_intensity"])
    low, high = np.nanmin(xs) / 4, np.nanmax(xs) * 4
    grid = np.geomspace(low, high, 200)
    ax.plot(grid, np.minimum(peak_flops, grid * bandwidth), color="black", linewidth=1.2, label="roof")
    plain_log(ax)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title("Roofline (compute roof and bandwidth slope)", fontsize=10)
    add_legend(ax)
    return True


KIND_ROW_TITLES = {"exact": "exact softmax attention", "approximate": "approximations of softmax",
                   "other": "other functions"}
PANEL_WIDTH, LABEL_WIDTH, GAP, ROW_HEIGHT = 3.2, 1.85, 0.7, 3.2


def _panel_grid(fig: Figure, rows: int, columns: int, heights: Sequence[float], label_width: float = LABEL_WIDTH):
    """A grid of panels each followed by room for its direct labels."""
    width = fig.get_figwidth()
    return fig.add_gridspec(rows, columns, height_ratios=list(heights), left=0.7 / width,
                            right=1 - label_width / width, bottom=0.45 / fig.get_figheight(),
                            top=1 - 0.35 / fig.get_figheight(), wspace=(label_width + GAP) / PANEL_WIDTH,
                            hspace=0.5)


def _kind_title(ax, kind: str) -> None:
    ax.set_title(f"{KIND_ROW_TITLES.get(kind, kind)} · {ax.get_title()}", fontsize=10)


def workload_figure(rows: pd.DataFrame, styles: Styles, multi_run: bool, baseline: str | None,
                    peaks: dict[str, float], bandwidth: float | None) -> str:
    """One row of panels per kind of variant (exact softmax, approximations, other functions): time, peak
    memory, and achieved FLOP/s (error against exact for approximations); then the speedup over the
    baseline and the roofline. Every line is named at its end, not in a legend.

    A decode workload (`data.DECODE_MAX_Q_LEN`) draws its bandwidth fraction
    in place of FLOP/s: a step that reads the KV cache is bound by memory.
    """
    from attnbench.report.data import KINDS

    kinds = [k for k in KINDS if (rows["kind"] == k).any()] if "kind" in rows.columns else [""]
    n_series = max(rows.groupby(["series", "run"]).ngroups, 1)
    heat = max(ROW_HEIGHT, 0.2 * n_series + 1.2)
    heights = [ROW_HEIGHT] * len(kinds) + [heat]
    fig = Figure(figsize=(3 * PANEL_WIDTH + 2 * (LABEL_WIDTH + GAP) + 0.7 + LABEL_WIDTH, sum(heights) * 1.25 + 0.8))
    grid = _panel_grid(fig, len(kinds) + 1, 3, heights)
    decode = "decode" in rows.columns and bool(rows["decode"].any())
    for r, kind in enumerate(kinds):
        part = rows[rows["kind"] == kind] if kind else rows
        axes = [fig.add_subplot(grid[r, c]) for c in range(3)]
        scaling_panel(axes[0], part, "time_median_s", styles, multi_run, "median time per call (s)",
                      "time (band: 95% interval)", interval=("time_ci_low_s", "time_ci_high_s"), timed=True)
        scaling_panel(axes[1], part, "peak_bytes", styles, multi_run, "peak bytes above inputs", "peak memory")
        if kind == "approximate":
            error_panel(axes[2], part, styles, multi_run, approx_only=True)
        elif decode:
            bandwidth_panel(axes[2], part, styles, multi_run)
        else:
            flops_panel(axes[2], part, styles, multi_run, peaks)
        for ax in axes:
            _kind_title(ax, kind)
            label_lines(ax)
    box, room = grid[len(kinds), 0:2].get_position(fig), 1.6 / fig.get_figwidth()   # room for the series' names
    heatmap = fig.add_axes((box.x0 + room, box.y0, box.width - room, box.height))
    speedup_panel(heatmap, rows, baseline, multi_run)
    ax = fig.add_subplot(grid[len(kinds), 2])
    peak = next(iter(peaks.values()), None)
    if roofline_panel(ax, rows, styles, multi_run, peak, bandwidth):
        ax.set_title("Roofline (colours as in the rows above)", fontsize=10)
        label_lines(ax, keep_legend=False)
    else:
        ax.set_axis_off()
    return to_data_uri(fig)


def overview_figure(rows: pd.DataFrame, styles: Styles, multi_run: bool) -> str:
    """Time against the swept length: exact softmax solid, approximations dashed, each named at its end;
    other functions in thin grey, unnamed (their own rows in the detail figure name them)."""
    fig = Figure(figsize=(7.8, 4.8))
    ax = fig.add_axes((0.11, 0.11, 0.56, 0.82))
    named = rows[rows["kind"].isin(["exact", "approximate"])] if "kind" in rows.columns else rows
    scaling_panel(ax, named, "time_median_s", styles, multi_run, "median time per call (s)",
                  "Median time per call", timed=True)
    others = rows[rows["kind"] == "other"] if "kind" in rows.columns else rows.iloc[0:0]
    for _series, _run, group in series_groups(others[others["status"] == "ok"]):
        values = positive_values(group["time_median_s"])
        mask = np.isfinite(values) & ~contended_mask(group)
        if mask.any():
            ax.plot(lengths(group).to_numpy(dtype=float)[mask], values[mask], color="0.75", linewidth=0.9,
                    marker="o", markersize=2.5, label="_other", zorder=1)
    if len(others):
        ax.plot([], [], color="0.75", linewidth=0.9, label="grey: other functions")
    label_lines(ax, fontsize=9)
    return to_data_uri(fig)


def time_figure(rows: pd.DataFrame, styles: Styles, multi_run: bool, title: str = "time") -> str:
    """Time against the swept length, one panel per kind of variant (for comparisons: both runs overlaid,
    line style the run), every line named at its end."""
    from attnbench.report.data import KINDS

    kinds = [k for k in KINDS if "kind" in rows.columns and (rows["kind"] == k).any()] or [""]
    label_width = LABEL_WIDTH + (0.8 if multi_run else 0)
    fig = Figure(figsize=(len(kinds) * (PANEL_WIDTH + label_width + GAP) + 0.7, 4.4))
    grid = _panel_grid(fig, 1, len(kinds), [1.0], label_width)
    for c, kind in enumerate(kinds):
        ax = fig.add_subplot(grid[0, c])
        part = rows[rows["kind"] == kind] if kind else rows
        scaling_panel(ax, part, "time_median_s", styles, multi_run, "median time per call (s)",
                      text(title), interval=("time_ci_low_s", "time_ci_high_s"), timed=True)
        if kind:
            _kind_title(ax, kind)
        label_lines(ax)
    return to_data_uri(fig)

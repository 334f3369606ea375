"""Figures of a report, drawn with matplotlib (Agg) and seaborn, returned as inline PNG data URIs."""

from __future__ import annotations

import base64
import io
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator, PercentFormatter  # noqa: E402

from attnbench.report.analysis import contended_mask  # noqa: E402
from attnbench.report.data import length_axis, lengths  # noqa: E402
from attnbench.report.fits import loglog_slope, pareto_frontier  # noqa: E402

DPI = 72
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")  # plain text: no mathtext to parse


def text(label: Any) -> str:
    """A label matplotlib draws literally: no mathtext from '$', no hiding from a leading '_'."""
    value = str(label).replace("$", r"\$")
    return "\u200b" + value if value.startswith("_") else value


def to_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


KIND_PALETTES = {"exact": "tab10", "approximate": "Dark2", "other": "Set1"}


def kind_palette(kind: str) -> list:
    """The colours of a kind's palette that read on white (Set1's yellow does not)."""
    colours = sns.color_palette(KIND_PALETTES.get(kind, "tab10"))
    return [c for c in colours if not (c[0] > 0.9 and c[1] > 0.9 and c[2] < 0.4)]
KIND_DASHES = {"exact": "-", "approximate": "--", "other": ":"}


class Styles:
    """One colour per series and one line style per run, the same in every figure.

    Given each series' kind (`data.variant_kind`), each kind takes its own palette (exact softmax tab10,
    approximations Dark2, other functions Set1) and, in a one-run report, its own dash: no palette is
    stretched over every series of a run, and a panel that holds one kind holds distinct colours.
    """

    def __init__(self, series: Sequence[str], runs: Sequence[str], kinds: dict[str, str] | None = None) -> None:
        names = list(dict.fromkeys(series))
        kinds = kinds or {}
        self.kinds = {name: kinds.get(name, "") for name in names}
        self.colors: dict[str, Any] = {}
        for kind in dict.fromkeys(self.kinds.values()):
            members = [name for name in names if self.kinds[name] == kind]
            base = kind_palette(kind)
            palette = base[:len(members)] if len(members) <= len(base) else sns.color_palette("husl", len(members))
            self.colors.update({name: palette[i] for i, name in enumerate(members)})
        self.runs = {run: i for i, run in enumerate(dict.fromkeys(runs))}

    def line(self, series: str, run: str) -> dict[str, Any]:
        index = self.runs.get(run, 0)
        dash = KIND_DASHES.get(self.kinds.get(series, ""), "-") if len(self.runs) < 2 else LINESTYLES[index % 4]
        return {"color": self.colors.get(series, "black"), "linestyle": dash, "marker": MARKERS[index % len(MARKERS)]}


def direct_labels(ax, entries: Sequence[tuple[float, float, str, Any, Any]], fontsize: float = 7.5) -> None:
    """Names right of the axes at the height of each line's last point, spread so that none overlaps another,
    each joined to its point by a thin line of its colour. An entry is (x, y, text, colour, xycoords)."""
    if not entries:
        return
    low, high = ax.get_ylim()
    log = ax.get_yscale() == "log"

    def fraction(y: float) -> float:
        if log:
            return (np.log10(y) - np.log10(low)) / (np.log10(high) - np.log10(low))
        return (y - low) / (high - low)

    height = ax.get_position().height * ax.figure.get_figheight()
    fontsize = min(fontsize, max(4.5, 72 * height * 1.1 / (1.3 * len(entries))))
    gap = fontsize * 1.3 / 72 / height
    order = sorted(range(len(entries)), key=lambda i: fraction(entries[i][1]))
    placed = spread([fraction(entries[i][1]) for i in order], gap)
    for i, y in zip(order, placed, strict=True):
        x, value, label, color, coords = entries[i]
        ax.annotate(text(label), xy=(x, value), xycoords=coords, xytext=(1.03, y), textcoords="axes fraction",
                    fontsize=fontsize, color=color, va="center", ha="left", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.5, "alpha": 0.7,
                                "shrinkA": 0, "shrinkB": 2})


def spread(wanted: Sequence[float], gap: float, low: float = -0.02, high: float = 1.02) -> list[float]:
    """Sorted positions moved apart by at least `gap`, within [low, high] where they fit, as little as can be."""
    placed = list(wanted)
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    if placed and placed[-1] > high:
        placed[-1] = high
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
    if placed and placed[0] < low:
        placed[0] = low
        for i in range(1, len(placed)):
            placed[i] = max(placed[i], placed[i - 1] + gap)
    return placed


def label_lines(ax, keep_legend: bool = True, fontsize: float = 7.5) -> None:
    """Replace the legend's lines by direct labels (`direct_labels`); marker-only entries (hollow: contended)
    stay in a small legend when `keep_legend`."""
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    entries, kept = [], []
    for line in ax.get_lines():
        label = str(line.get_label())
        if label.startswith("_") or not len(line.get_xdata()):
            if label and not label.startswith("_"):
                kept.append(line)
            continue
        if str(line.get_linestyle()) in ("None", "none", ""):
            continue
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        finite = np.isfinite(x) & np.isfinite(y)
        if not finite.any():
            continue
        coords = "data" if line.get_transform() == ax.transData else ("axes fraction", "data")
        last = np.flatnonzero(finite)[-1]
        entries.append((x[last], y[last], label, line.get_color(), coords))
    direct_labels(ax, entries, fontsize)
    if keep_legend and kept:
        ax.legend(handles=kept, fontsize=7, framealpha=0.85, loc="lower right")


def _label(series: str, run: str, multi_run: bool) -> str:
    return short(f"{series} · {run}" if multi_run else series)


def short(label: str, limit: int = 60) -> str:
    """Long names cut with an ellipsis in figures (the tables keep them whole)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _series_groups(rows: pd.DataFrame):
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        yield str(series), str(run), group.iloc[np.argsort(lengths(group).to_numpy(), kind="stable")]


def _positive(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(array) & (array > 0), array, np.nan)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _log_axes(ax, swept=None) -> None:
    """Log-log axes with ticks at the measured lengths only: readable, and cheap to lay out."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if swept is not None and len(swept):
        ticks = sorted({int(n) for n in swept})
        ax.set_xticks(ticks, [str(n) for n in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())      # tick objects are most of a figure's drawing time
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=7))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.tick_params(axis="y", labelsize=8)


def _plain_log(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=7))
        axis.set_major_formatter(PLAIN)
        axis.set_minor_locator(NullLocator())
    ax.tick_params(labelsize=8)


def _legend(ax) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, framealpha=0.85, loc="best")


def _finish_panel(ax, rows: pd.DataFrame, drawn: bool, empty: str, ylabel: str, title: str) -> None:
    """Log axes and a legend over what was drawn (else the `empty` message), then the labels."""
    if not drawn:
        _empty(ax, empty)
    else:
        _log_axes(ax, lengths(rows).unique())
        _legend(ax)
    ax.set_xlabel(length_axis(rows))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


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
    for series, run, group in _series_groups(ok):
        values = _positive(group[column])
        swept = lengths(group).to_numpy(dtype=float)
        measured = np.isfinite(values)
        contended = measured & contended_mask(group) if timed else np.zeros(len(group), dtype=bool)
        mask = measured & ~contended
        if not measured.any():
            continue
        slope = loglog_slope(swept[mask], values[mask])
        slope_text = f"slope {slope:.2f}" if slope is not None else ("one point" if mask.any() else "no slope")
        style = styles.line(series, run)
        ax.plot(swept[mask], values[mask], label=text(f"{_label(series, run, multi_run)} ({slope_text})"),
                markersize=4, linewidth=1.4, **style)
        hollow |= _hollow(ax, swept[contended], values[contended], style)
        if interval is not None:
            low, high = _positive(group[interval[0]]), _positive(group[interval[1]])
            band = mask & np.isfinite(low) & np.isfinite(high)
            if band.any():
                ax.fill_between(swept[band], low[band], high[band], color=style["color"], alpha=0.18, linewidth=0)
        drawn = True
    _hollow_legend(ax, hollow)
    _finish_panel(ax, rows, drawn, f"no {ylabel} measured", ylabel, title)
    return drawn


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
    for series, run, group in _series_groups(ok):
        values = _positive(group[column])
        swept = lengths(group).to_numpy(dtype=float)
        measured = np.isfinite(values)
        contended = measured & contended_mask(group)
        mask = measured & ~contended
        if measured.any():
            style = styles.line(series, run)
            ax.plot(swept[mask], values[mask], label=text(_label(series, run, multi_run)), markersize=4,
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
    _finish_panel(ax, rows, drawn, "no FLOP counts in these cells", "achieved FLOP/s",
                  "Achieved FLOP/s" + ("" if peaks else " (not calibrated: no peak line)"))


def bandwidth_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool) -> bool:
    """The fraction of the run's copy bandwidth each cell's least traffic achieves (`bandwidth_fraction`),
    on a linear axis with 1 drawn; achieved bytes/s on log axes where no run is calibrated.

    What a decode step is bound by, in place of its FLOP/s (the roofline keeps those).
    """
    fractions = pd.to_numeric(rows.loc[rows["status"] == "ok", "bandwidth_fraction"], errors="coerce")
    if not fractions.notna().any():
        drawn = _rate_lines(ax, rows, "bytes_per_s", styles, multi_run)
        _finish_panel(ax, rows, drawn, "no traffic (bytes_per_s) in these cells", "achieved bytes/s",
                      "Achieved bandwidth (not calibrated: no copy bandwidth)")
        return drawn
    drawn = _rate_lines(ax, rows, "bandwidth_fraction", styles, multi_run)
    ax.axhline(1.0, color="black", linewidth=1, label="calibrated copy bandwidth")
    _log_axes(ax, lengths(rows).unique())
    ax.set_yscale("linear")
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.set_ylim(0, max(1.1, float(fractions.max()) * 1.1))
    _legend(ax)
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
    for series, run, group in _series_groups(ok):
        swept = lengths(group).to_numpy(dtype=float)
        style = styles.line(series, run)
        for column, suffix, linestyle in lines:
            if column == "approx_rel_l2_error" and not bool(group["is_approximate"].any()):
                continue
            raw = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
            zeros |= bool((raw == 0).any())
            values = _positive(raw)
            mask = np.isfinite(values)
            if mask.any():
                ax.plot(swept[mask], values[mask], label=text(_label(series, run, multi_run) + suffix),
                        markersize=4, linewidth=1.2, **{**style, "linestyle": linestyle})
                drawn = True
    title = "Error against exact softmax" if approx_only else "Error (solid: own reference; dashed: vs exact softmax)"
    _finish_panel(ax, rows, drawn, "no errors measured", "relative L2 error",
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
        records.append({"row": _label(r.series, r.run, multi_run), axis: int(n),
                        "speedup": float(reference) / float(r.time_median_s)})
    if not records:
        return None
    table = pd.DataFrame(records).pivot_table(index="row", columns=axis, values="speedup", aggfunc="first", sort=False)
    return table


def speedup_panel(ax, rows: pd.DataFrame, baseline: str | None, multi_run: bool) -> None:
    table = speedup_matrix(rows, baseline, multi_run)
    if table is None:
        _empty(ax, f"baseline {baseline!s} not measured in this workload" if baseline else "no baseline")
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
    for series, run, group in _series_groups(ok):
        x = _positive(group["arithmetic_intensity"])
        y = _positive(group["flops_per_s"])
        mask = np.isfinite(x) & np.isfinite(y)
        if mask.any():
            style = styles.line(series, run)
            ax.scatter(x[mask], y[mask], color=style["color"], marker=style["marker"], s=18,
                       label=text(_label(series, run, multi_run)))
            drawn = True
    if not drawn:
        return False
    xs = _positive(ok["arithmetic_intensity"])
    low, high = np.nanmin(xs) / 4, np.nanmax(xs) * 4
    grid = np.geomspace(low, high, 200)
    ax.plot(grid, np.minimum(peak_flops, grid * bandwidth), color="black", linewidth=1.2, label="roof")
    _plain_log(ax)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title("Roofline (compute roof and bandwidth slope)", fontsize=10)
    _legend(ax)
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
    for _series, _run, group in _series_groups(others[others["status"] == "ok"]):
        values = _positive(group["time_median_s"])
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


def _legend_below(strip, ax) -> None:
    strip.set_axis_off()
    legend = ax.get_legend()
    if legend is None:
        return
    handles, labels = ax.get_legend_handles_labels()
    legend.remove()
    strip.legend(handles, labels, loc="upper left", fontsize=7, frameon=False, borderaxespad=0)


QUALITY_METRICS = (("approx_rel_l2_error", "relative L2 error of the output vs exact softmax"),
                   ("approx_kl", "KL(exact ‖ approx) of the attention rows (nats)"))


def quality_figure(points: pd.DataFrame, styles: Styles, multi_run: bool, baseline_times: dict[str, float],
                   title: str) -> str:
    """Output error, and (where measured) the rows' KL divergence, against time: one point per knob setting.

    Each panel draws the Pareto frontier per run (settings no other beats on both time and that metric).
    """
    metrics = [(column, label) for column, label in QUALITY_METRICS
               if column in points.columns and pd.to_numeric(points[column], errors="coerce").gt(0).any()]
    metrics = metrics or list(QUALITY_METRICS[:1])
    fig = Figure(figsize=(8 if len(metrics) == 1 else 13, 5.5))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, (column, label) in zip(axes, metrics, strict=True):
        _quality_panel(ax, points, column, label, styles, multi_run, baseline_times)
    fig.suptitle(text(title), fontsize=10)
    fig.subplots_adjust(left=0.07 if len(metrics) > 1 else 0.11, right=0.98, bottom=0.1, top=0.9, wspace=0.22)
    return to_data_uri(fig)


def _quality_panel(ax, points: pd.DataFrame, column: str, label: str, styles: Styles, multi_run: bool,
                   baseline_times: dict[str, float]) -> None:
    rows = points[pd.to_numeric(points[column], errors="coerce").gt(0)].copy()
    rows[column] = rows[column].astype(float)
    for run, group in rows.groupby("run", sort=False):
        run = str(run)
        for r in group.itertuples(index=False):
            style = styles.line(r.series, run)
            value = getattr(r, column)
            ax.scatter([r.time_median_s], [value], color=style["color"], marker=style["marker"], s=36, zorder=3)
            ax.annotate(text(_label(r.series, run, multi_run)), (r.time_median_s, value),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
        frontier = group.iloc[pareto_frontier(list(group["time_median_s"]), list(group[column]))]
        if len(frontier):
            ax.step(frontier["time_median_s"], frontier[column], where="post", color="black",
                    linestyle=LINESTYLES[styles.runs.get(run, 0) % 4], linewidth=1,
                    label=text(f"Pareto frontier{' · ' + run if multi_run else ''}"))
    for run, seconds in baseline_times.items():
        ax.axvline(seconds, color="grey", linestyle=":", linewidth=1,
                   label=text(f"exact baseline time{' · ' + run if multi_run else ''}"))
    _plain_log(ax)
    ax.set_xlabel("median time per call (s)")
    ax.set_ylabel(label)
    _legend(ax)


def attention_maps_figure(maps: dict[str, Any]) -> str:
    """Exact weights, then each variant's weights beside their difference from exact."""
    exact = np.asarray(maps["exact"], dtype=float)
    variants = [(name, np.asarray(values, dtype=float)) for name, values in (maps.get("variants") or {}).items()]
    rows = 1 + len(variants)
    fig = Figure(figsize=(8.5, 3.2 * rows))
    axes = np.atleast_2d(fig.subplots(rows, 2, squeeze=False))
    vmax = float(np.nanmax(exact)) if exact.size else 1.0
    _heat(fig, axes[0, 0], exact, "exact softmax weights", "viridis", 0.0, vmax)
    axes[0, 1].set_axis_off()
    for i, (name, weights) in enumerate(variants, start=1):
        _heat(fig, axes[i, 0], weights, f"{name}: weights", "viridis", 0.0, vmax)
        if weights.shape == exact.shape:
            diff = weights - exact
            bound = float(np.nanmax(np.abs(diff)))
            if bound < 1e-6:    # below the file's 5 significant digits: the same map
                _empty(axes[i, 1], text(f"{name} equals exact (max |Δ| {bound:.1g})"))
            else:
                _heat(fig, axes[i, 1], diff, f"{name} − exact (max |Δ| {bound:.2g})", "RdBu_r", -bound, bound)
        else:
            _empty(axes[i, 1], f"shape {weights.shape} differs from exact {exact.shape}")
    fig.subplots_adjust(left=0.09, right=0.9, bottom=0.3 / rows, top=1 - 0.25 / rows, wspace=0.55, hspace=0.4)
    return to_data_uri(fig)


def _heat(fig: Figure, ax, values: np.ndarray, title: str, cmap: str, vmin: float, vmax: float) -> None:
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-12,
                      interpolation="nearest", aspect="auto")
    ax.set_title(text(title), fontsize=9)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def task_figure(rows: pd.DataFrame, styles: Styles, multi_run: bool, longest: int, title: str,
                chance: float | None = None) -> str:
    """One task group's recall: against seq_len, and at `longest` against state size, against kernel time and
    against the training examples seen (the learning curve).

    `rows` are `recall_summary` rows with `series` and `run`; error bars span
    the seeds' min–max recall where more than one seed trained. The cost
    panel draws the Pareto frontier per run (higher recall, lower time).
    `chance` (the recall of a guess among the values) is drawn as a dotted
    line on every panel.
    """
    ok = rows[(rows["status"] == "ok") & pd.to_numeric(rows["recall"], errors="coerce").notna()]
    at_longest = ok[ok["seq_len"] == longest]
    legend_rows = max(ok.groupby(["series", "run"]).ngroups, ok.groupby(["family", "run"]).ngroups, 1) + 1
    legend_height = 0.35 + 0.16 * legend_rows
    fig = Figure(figsize=(21, 4.6 + legend_height))
    grid = fig.add_gridspec(2, 4, height_ratios=[4.2, legend_height], left=0.04, right=0.99, bottom=0.01, top=0.9,
                            wspace=0.28, hspace=0.3)
    axes = [fig.add_subplot(grid[0, c]) for c in range(4)]
    recall_length_panel(axes[0], ok, styles, multi_run)
    recall_state_panel(axes[1], at_longest, family_styles(rows, styles), multi_run, longest)
    recall_cost_panel(axes[2], at_longest, styles, multi_run, longest)
    learning_curve_panel(axes[3], at_longest, styles, multi_run, longest)
    if chance is not None and chance == chance:
        for ax in axes:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1, zorder=0,
                       label=f"chance ({chance:.1%}: a guess among the values)")
    for c in range(4):
        _legend_below(fig.add_subplot(grid[1, c]), axes[c])
    fig.suptitle(text(title), fontsize=10)
    return to_data_uri(fig)


def _log_x(ax) -> None:
    """A log x axis labelled at 1, 2 and 5 of each decade: these panels often span less than one."""
    ax.margins(x=0.15)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5), numticks=12))
    ax.xaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_minor_locator(NullLocator())


def family_styles(rows: pd.DataFrame, styles: Styles) -> Styles:
    """One colour per variant family: that of its first series in `styles`, so the panels agree."""
    families = Styles([], list(styles.runs))
    for family, series in zip(rows["family"].astype(str), rows["series"].astype(str), strict=True):
        families.colors.setdefault(family, styles.colors.get(series, "black"))
    return families


def _recall_axis(ax) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("recall (held-out queries)")
    ax.tick_params(labelsize=8)


def _seed_spread(rows: pd.DataFrame) -> np.ndarray | None:
    """[below, above] the mean recall to the seeds' min and max; None where every point is one seed."""
    if not (pd.to_numeric(rows["seeds_ok"], errors="coerce") > 1).any():
        return None
    recall = rows["recall"].to_numpy(dtype=float)
    low = np.nan_to_num(recall - rows["recall_min"].to_numpy(dtype=float))
    high = np.nan_to_num(rows["recall_max"].to_numpy(dtype=float) - recall)
    return np.vstack([low, high])


def _recall_points(ax, rows: pd.DataFrame, x: np.ndarray, style: dict[str, Any], label: str | None,
                   joined: bool = True) -> None:
    ax.errorbar(x, rows["recall"].to_numpy(dtype=float), yerr=_seed_spread(rows), capsize=3, markersize=5,
                linewidth=1.4 if joined else 0, elinewidth=1, label=label,
                **{**style, "linestyle": style["linestyle"] if joined else "none"})


def learning_curve_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool, seq_len: int) -> None:
    """Held-out recall against training examples seen, one line per series (the mean over its seeds)."""
    import json

    drawn = 0
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        text_curve = group["recall_curve"].iloc[0] if "recall_curve" in group.columns else None
        curve = json.loads(text_curve) if isinstance(text_curve, str) and text_curve else []
        if not curve:
            continue
        seen, recall = zip(*curve, strict=True)
        ax.plot(seen, recall, **styles.line(str(series), str(run)), linewidth=1.4, markersize=3,
                label=text(_label(str(series), str(run), multi_run)))
        drawn += 1
    if not drawn:
        _empty(ax, "no learning curve stored (cells from before curves were kept)")
    else:
        ax.set_xscale("log")
    ax.set_xlabel("training examples seen")
    _recall_axis(ax)
    ax.set_title(f"Learning curve at seq_len {seq_len}", fontsize=10)
    _legend(ax)


def recall_length_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool) -> None:
    """Recall against seq_len, one line per series (a variant at one knob setting)."""
    if rows.empty:
        _empty(ax, "no configuration trained")
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        group = group.sort_values("seq_len")
        _recall_points(ax, group, group["seq_len"].to_numpy(dtype=float), styles.line(str(series), str(run)),
                       text(_label(str(series), str(run), multi_run)))
    ax.set_xscale("log", base=2)
    ticks = sorted({int(n) for n in rows["seq_len"]})
    ax.set_xticks(ticks, [str(n) for n in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("seq_len")
    _recall_axis(ax)
    ax.set_title("Recall against sequence length", fontsize=10)
    _legend(ax)


def recall_state_panel(ax, rows: pd.DataFrame, families: Styles, multi_run: bool, seq_len: int) -> None:
    """Recall against state size (log), one line per variant family through its knob settings."""
    from attnbench.store.quality import state_knob

    sized = rows[pd.to_numeric(rows["state_size"], errors="coerce").gt(0)]
    unsized = sorted(set(rows["series"]) - set(sized["series"]))
    for (family, run), group in sized.groupby(["family", "run"], sort=False):
        group = group.sort_values("state_size")
        x = group["state_size"].to_numpy(dtype=float)
        variants = list(dict.fromkeys(map(str, group["variant"])))
        name = str(family) if variants == [str(family)] else f"{family}: {', '.join(variants)}"
        _recall_points(ax, group, x, families.line(str(family), str(run)), text(_label(name, str(run), multi_run)))
        for r, state in zip(group.itertuples(index=False), x, strict=True):
            knob = state_knob(str(r.variant), str(r.params), int(r.head_dim))
            if knob is not None:
                ax.annotate(text(f"{knob[0]}={knob[1]}"), (state, r.recall), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
    if sized.empty:
        _empty(ax, "no variant here declares its state size")
    else:
        _log_x(ax)
    ax.set_xlabel("state size (elements per sequence per layer)")
    _recall_axis(ax)
    missing = f" · not drawn (no state size): {short(', '.join(unsized), 40)}" if unsized else ""
    ax.set_title(text(f"Recall against state size at seq_len {seq_len}{missing}"), fontsize=10)
    _legend(ax)


def recall_cost_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool, seq_len: int) -> None:
    """Recall against the kernel's time per training call (log), with each run's Pareto frontier named."""
    from attnbench.report.tasks import frontier_indices

    timed = rows[pd.to_numeric(rows["time_median_s"], errors="coerce").gt(0)]
    hollow = False
    for run, group in timed.groupby("run", sort=False):
        run = str(run)
        for series, points in group.groupby("series", sort=False):
            x = points["time_median_s"].to_numpy(dtype=float)
            style = styles.line(str(series), run)
            contended = contended_mask(points.rename(columns={"time_contended": "contended"}))
            _recall_points(ax, points[~contended], x[~contended], style, None, joined=False)
            if contended.any():     # hollow, as the timing plots draw a contended cell
                _recall_points(ax, points[contended], x[contended], {**style, "markerfacecolor": "none"}, None,
                               joined=False)
                hollow = True
            for time_s, recall in zip(x, points["recall"], strict=True):
                ax.annotate(text(_label(str(series), run, multi_run)), (time_s, recall), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        best = group.iloc[frontier_indices(group)]
        if len(best):
            times, recalls = best["time_median_s"].astype(float), best["recall"].astype(float)
            ax.step(times, recalls, where="post", color="black", linestyle=LINESTYLES[styles.runs.get(run, 0) % 4],
                    linewidth=1, zorder=1, marker="*", markersize=10, markevery=list(range(len(best))),
                    label=text(f"Pareto frontier{' · ' + run if multi_run else ''} (stars: higher recall, lower time)\n"
                               + short(", ".join(map(str, best["series"])), 70)))
    if hollow:
        ax.plot([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none", markeredgecolor="black",
                label="hollow: kernel time contended (descheduled)")
    if timed.empty:
        _empty(ax, "no kernel cell timed on these shapes")
    else:
        _log_x(ax)
    mode = str(rows["mode"].iloc[0]) if len(rows) else "fwd_bwd"
    ax.set_xlabel(f"kernel median time per training call ({mode}, s)")
    _recall_axis(ax)
    ax.set_title(f"Quality against cost at seq_len {seq_len}", fontsize=10)
    _legend(ax)

"""What every figure of a report shares: styles per series and kind, direct line labels, log axes, PNG data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from attnbench.report.backend import Figure, sns
from attnbench.report.data import length_axis, lengths

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


def series_label(series: str, run: str, multi_run: bool) -> str:
    return short(f"{series} · {run}" if multi_run else series)


def short(label: str, limit: int = 60) -> str:
    """Long names cut with an ellipsis in figures (the tables keep them whole)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def series_groups(rows: pd.DataFrame):
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        yield str(series), str(run), group.iloc[np.argsort(lengths(group).to_numpy(), kind="stable")]


def positive_values(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(array) & (array > 0), array, np.nan)


def empty_panel(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def log_axes(ax, swept=None) -> None:
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


def plain_log(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=7))
        axis.set_major_formatter(PLAIN)
        axis.set_minor_locator(NullLocator())
    ax.tick_params(labelsize=8)


def add_legend(ax) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, framealpha=0.85, loc="best")


def finish_panel(ax, rows: pd.DataFrame, drawn: bool, empty: str, ylabel: str, title: str) -> None:
    """Log axes and a legend over what was drawn (else the `empty` message), then the labels."""
    if not drawn:
        empty_panel(ax, empty)
    else:
        log_axes(ax, lengths(rows).unique())
        add_legend(ax)
    ax.set_xlabel(length_axis(rows))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def legend_below(strip, ax) -> None:
    """Move `ax`'s legend into the empty axes `strip` below it."""
    strip.set_axis_off()
    legend = ax.get_legend()
    if legend is None:
        return
    handles, labels = ax.get_legend_handles_labels()
    legend.remove()
    strip.legend(handles, labels, loc="upper left", fontsize=7, frameon=False, borderaxespad=0)

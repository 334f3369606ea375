"""The report's quality figures: error against cost, attention maps, and task recall against length, state and cost."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator, PercentFormatter

from attnbench.report.analysis import contended_mask
from attnbench.report.backend import Figure
from attnbench.report.fits import pareto_frontier
from attnbench.report.plot_style import (
    LINESTYLES,
    PLAIN,
    Styles,
    add_legend,
    empty_panel,
    legend_below,
    plain_log,
    series_label,
    short,
    text,
    to_data_uri,
)

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
            ax.annotate(text(series_label(r.series, run, multi_run)), (r.time_median_s, value),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
        frontier = group.iloc[pareto_frontier(list(group["time_median_s"]), list(group[column]))]
        if len(frontier):
            ax.step(frontier["time_median_s"], frontier[column], where="post", color="black",
                    linestyle=LINESTYLES[styles.runs.get(run, 0) % 4], linewidth=1,
                    label=text(f"Pareto frontier{' · ' + run if multi_run else ''}"))
    for run, seconds in baseline_times.items():
        ax.axvline(seconds, color="grey", linestyle=":", linewidth=1,
                   label=text(f"exact baseline time{' · ' + run if multi_run else ''}"))
    plain_log(ax)
    ax.set_xlabel("median time per call (s)")
    ax.set_ylabel(label)
    add_legend(ax)


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
                empty_panel(axes[i, 1], text(f"{name} equals exact (max |Δ| {bound:.1g})"))
            else:
                _heat(fig, axes[i, 1], diff, f"{name} − exact (max |Δ| {bound:.2g})", "RdBu_r", -bound, bound)
        else:
            empty_panel(axes[i, 1], f"shape {weights.shape} differs from exact {exact.shape}")
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
        legend_below(fig.add_subplot(grid[1, c]), axes[c])
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


def recall_length_panel(ax, rows: pd.DataFrame, styles: Styles, multi_run: bool) -> None:
    """Recall against seq_len, one line per series (a variant at one knob setting)."""
    if rows.empty:
        empty_panel(ax, "no configuration trained")
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        group = group.sort_values("seq_len")
        _recall_points(ax, group, group["seq_len"].to_numpy(dtype=float), styles.line(str(series), str(run)),
                       text(series_label(str(series), str(run), multi_run)))
    ax.set_xscale("log", base=2)
    ticks = sorted({int(n) for n in rows["seq_len"]})
    ax.set_xticks(ticks, [str(n) for n in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("seq_len")
    _recall_axis(ax)
    ax.set_title("Recall against sequence length", fontsize=10)
    add_legend(ax)


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
        _recall_points(ax, group, x, families.line(str(family), str(run)), text(series_label(name, str(run), multi_run)))
        for r, state in zip(group.itertuples(index=False), x, strict=True):
            knob = state_knob(str(r.variant), str(r.params), int(r.head_dim))
            if knob is not None:
                ax.annotate(text(f"{knob[0]}={knob[1]}"), (state, r.recall), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
    if sized.empty:
        empty_panel(ax, "no variant here declares its state size")
    else:
        _log_x(ax)
    ax.set_xlabel("state size (elements per sequence per layer)")
    _recall_axis(ax)
    missing = f" · not drawn (no state size): {short(', '.join(unsized), 40)}" if unsized else ""
    ax.set_title(text(f"Recall against state size at seq_len {seq_len}{missing}"), fontsize=10)
    add_legend(ax)


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
                ax.annotate(text(series_label(str(series), run, multi_run)), (time_s, recall), fontsize=7,
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
        empty_panel(ax, "no kernel cell timed on these shapes")
    else:
        _log_x(ax)
    mode = str(rows["mode"].iloc[0]) if len(rows) else "fwd_bwd"
    ax.set_xlabel(f"kernel median time per training call ({mode}, s)")
    _recall_axis(ax)
    ax.set_title(f"Quality against cost at seq_len {seq_len}", fontsize=10)
    add_legend(ax)


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
                label=text(series_label(str(series), str(run), multi_run)))
        drawn += 1
    if not drawn:
        empty_panel(ax, "no learning curve stored (cells from before curves were kept)")
    else:
        _log_x(ax)
    ax.set_xlabel("training examples seen")
    _recall_axis(ax)
    ax.set_title(f"Learning curve at seq_len {seq_len}", fontsize=10)
    add_legend(ax)

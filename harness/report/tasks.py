"""The task quality section: recall after training, per task and model width, beside the kernel's cost.

Reads `ReportData.tasks` (the `recall_summary` of the quality cells, one row
per run and configuration, its seeds aggregated) and `ReportData.task_cells`.
A *task group* is one task at one model shape (batch, heads, head_dim, dtype,
mode, device, ...): one table, one figure and one frontier list each, with a
row per series (a variant at one knob setting) and a column per seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.core.axes import AXES
from attnbench.core.taskspec import parse_task
from attnbench.core.units import finite, format_seconds
from attnbench.report.analysis import is_contended
from attnbench.report.data import ReportData, status_text
from attnbench.report.fits import pareto_frontier
from attnbench.report.tables import GridCell
from attnbench.store.quality import state_knob

GROUP_KEYS = ("task", "d_model", *AXES.kind_axes(), "dtype", "causal", "mode", "device")


@dataclass(frozen=True)
class TaskGroup:
    """One task at one model shape: its summary rows, the table of them and its recall–cost frontier."""

    title: str
    task: str
    rows: pd.DataFrame
    seq_lens: list[int]
    table: list[tuple[str, str, list[GridCell]]]
    frontier: list[dict[str, str]]

    @property
    def chance(self) -> float | None:
        """The recall of a guess among the task's values (None for a task text that does not parse)."""
        try:
            return parse_task(self.task).chance_recall
        except ValueError:
            return None

    @property
    def longest(self) -> int:
        """The seq_len with the most configurations (the longest of a tie): where the figure places
        recall against state size and cost, since that is where a suite sweeps the state knobs."""
        counts = self.rows.groupby("seq_len")["series"].nunique()
        return int(max(counts.index, key=lambda n: (counts[n], n)))


def task_groups(data: ReportData) -> list[TaskGroup]:
    """The task groups of the runs, in a stable order; empty for runs without quality cells."""
    tasks = data.tasks
    if tasks.empty:
        return []
    groups = []
    tasks = tasks.assign(d_model=tasks["heads"] * tasks["head_dim"])
    for _key, rows in tasks.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        rows = rows.sort_values(["series", "run", "seq_len"], kind="stable")
        seq_lens = sorted(int(n) for n in rows["seq_len"].unique())
        first = rows.iloc[0]
        groups.append(TaskGroup(title=group_title(first), task=str(first["task"]), rows=rows, seq_lens=seq_lens,
                                table=_table(rows, seq_lens, data.multi_run),
                                frontier=frontier(rows, data.multi_run)))
    return groups


def group_title(row: Any) -> str:
    """'mqar kv4 · 2 layers · 600 steps · d_model 64 (4 heads × 16) · batch 8 · float32 fwd_bwd · cpu'."""
    try:
        spec = parse_task(str(row["task"]))
        parts = [spec.short, f"{spec.layers} layers", f"{spec.steps} steps"]
    except ValueError:
        parts = [str(row["task"])]
    heads, head_dim = int(row["heads"]), int(row["head_dim"])
    parts.append(f"d_model {heads * head_dim}")
    parts += [str(row[axis]) for axis in AXES.kind_axes() if row[axis] != AXES[axis].default]
    parts += [f"{row['dtype']} {row['mode']}", str(row["device"])]
    if not bool(row["causal"]):
        parts.append("non-causal")
    return " · ".join(parts)


def format_recall(value: Any) -> str:
    """'87.5%'; '–' when missing."""
    number = finite(value)
    return "–" if number is None else f"{number:.1%}"


def recall_text(row: Any) -> str:
    """'recall 87.5%', with '(min 80.0–max 93.8%, 3 seeds)' when more than one seed trained."""
    text = f"recall {format_recall(row['recall'])}"
    if int(row["seeds_ok"]) > 1:
        text += f" ({row['recall_min']:.1%}–{row['recall_max']:.1%}, {int(row['seeds_ok'])} seeds)"
    return text


def state_text(row: Any) -> str:
    """'state 544 (features=64)': the elements the mixer carries per sequence, and the knob that sets them;
    'state not declared' where the variant does not say."""
    size = finite(row["state_size"])
    knob = state_knob(str(row["variant"]), str(row["params"]), int(row["head_dim"]))
    if size is None:
        return "state not declared"
    return f"state {int(size):,}" + (f" ({knob[0]}={knob[1]})" if knob else "")


def kernel_text(row: Any) -> str:
    """'kernel 1.2 ms/call': the kernel cell's median time of one training call on these shapes."""
    seconds = finite(row["time_median_s"])
    if seconds is None:
        return "kernel not timed"
    return f"kernel {format_seconds(seconds)}/call" + (" (contended)" if is_contended(row.get("time_contended")) else "")


def _table(rows: pd.DataFrame, seq_lens: list[int], multi_run: bool) -> list[tuple[str, str, list[GridCell]]]:
    table = []
    for (series, run), group in rows.groupby(["series", "run"], sort=False):
        by_len = {int(r["seq_len"]): r for _, r in group.iterrows()}
        table.append((str(series), str(run) if multi_run else "", [_cell(by_len.get(n)) for n in seq_lens]))
    return table


def _cell(row: Any) -> GridCell:
    if row is None:
        return GridCell(status="absent", lines=["not trained in this run"])
    if row["status"] != "ok":
        return GridCell(status=str(row["status"]), lines=[status_text(str(row["status"]), row["reason"])])
    lines = [recall_text(row)]
    if "," in str(row.get("lrs") or ""):
        lines.append(f"lr {row['lr']:g}, the best of {row['lrs']}")
    if int(row["seeds_ok"]) < int(row["seeds"]):
        lines.append(f"{int(row['seeds']) - int(row['seeds_ok'])} of {int(row['seeds'])} seeds failed")
    loss = finite(row["loss_last"])
    lines.append(f"{int(row['heads'])} heads × {int(row['head_dim'])}, batch {int(row['batch'])}")
    lines += [f"final loss {loss:.3g}" if loss is not None else "final loss –",
              f"train {format_seconds(row['train_s'])}", state_text(row), kernel_text(row)]
    return GridCell(status="ok", lines=lines,
                    title="recall on the held-out queries (mean; min–max over seeds); final training loss; "
                          "training time; state elements per sequence; kernel time of one training call")


def frontier(rows: pd.DataFrame, multi_run: bool) -> list[dict[str, str]]:
    """Per seq_len and run, the configurations no other beats on both recall (higher) and kernel time (lower)."""
    listed = []
    ok = rows[rows["status"] == "ok"]
    for (seq_len, run), group in ok.groupby(["seq_len", "run"], sort=True):
        for index in frontier_indices(group):
            r = group.iloc[index]
            listed.append({"seq_len": str(int(seq_len)), "run": str(run) if multi_run else "",
                           "series": str(r["series"]), "recall": format_recall(r["recall"]),
                           "time": format_seconds(r["time_median_s"]), "state": state_text(r)})
    return listed


def frontier_indices(rows: pd.DataFrame) -> list[int]:
    """Positions in `rows` of its recall–time Pareto frontier, fastest first (rows without a time are left out)."""
    recall = pd.to_numeric(rows["recall"], errors="coerce")
    return pareto_frontier(list(pd.to_numeric(rows["time_median_s"], errors="coerce")), list(-recall))


def task_failures(data: ReportData) -> list[dict[str, str]]:
    """Every configuration with a seed that did not train: its seeds, status and reason (one row per reason)."""
    cells = data.task_cells
    if cells.empty:
        return []
    failed = cells[cells["status"] != "ok"].sort_values(["series", "run", "seq_len", "seed"], kind="stable")
    listed: dict[tuple[str, ...], dict[str, Any]] = {}
    for _, r in failed.iterrows():
        row = {"run": str(r["run"]) if data.multi_run else "", "series": str(r["series"]), "group": group_title(r),
               "seq_len": str(int(r["seq_len"])), "status": str(r["status"]), "reason": str(r["reason"] or "")}
        listed.setdefault(tuple(row.values()), {**row, "seeds": []})["seeds"].append(str(int(r["seed"])))
    return [{**row, "seeds": ", ".join(row["seeds"])} for row in listed.values()]

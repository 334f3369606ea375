"""Quality cells in the tidy frame: recall per trained configuration across seeds, beside its kernel cost.

Pure pandas (no torch). A *configuration* is a quality cell's case without
its seed: the same variant, knobs, shapes and task trained once per seed.
`recall_summary` gives one row per configuration and run: the mean recall,
its spread over seeds (min, max, standard deviation), the loss and time of
training, the state size, and the median time per call of the kernel cell
timed on the same shapes (`TaskTable.costs`, a suite's ``task.costs``), which is the quality-cost
pair a report plots.
"""

from __future__ import annotations

import pandas as pd

from attnbench.core.axes import AXES

# What makes a kernel cell the cost of a quality cell: every case column but the task and the seed.
SHAPE_KEYS = ("run_id", "variant", "params", *AXES.trained())
CONFIG_KEYS = (*SHAPE_KEYS, "task")


def merge_on_shapes(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """`left` with `right`'s other columns joined on the SHAPE_KEYS (how="left"; one row of `right` per shape).

    The keys are compared as text, an unset value (None, NaN) as one value and 2048.0 as 2048: a summary
    built row by row holds NaN and floats where the tidy frame holds None and integers."""
    key = "_shape_key"
    right = right.drop(columns=list(SHAPE_KEYS)).assign(**{key: _shape_text(right)}).drop_duplicates(key)
    joined = left.assign(**{key: _shape_text(left)}).merge(right, on=key, how="left")
    return joined.drop(columns=key)


def _shape_text(frame: pd.DataFrame) -> pd.Series:
    def text(value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "none"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    return frame[list(SHAPE_KEYS)].apply(lambda row: "\0".join(text(v) for v in row), axis=1)


def is_quality_row(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of quality cells (a task other than none)."""
    if "task_kind" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["task_kind"].fillna("none").ne("none")


def kernel_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The kernel cells only: what every timing table, plot and gate reads."""
    return frame[~is_quality_row(frame)]


def quality_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[is_quality_row(frame)]


def recall_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, configuration): recall over its seeds and the kernel cost of its shapes.

    Columns: the CONFIG_KEYS, `family`, `seeds` (cells trained), `seeds_ok`,
    `recall` (mean over the ok seeds), `recall_min`, `recall_max`,
    `recall_std` (sample standard deviation; NaN for one seed), `loss_last`,
    `train_s` (mean), `steps`, `parameters`, `state_size`, `status`
    ('ok' when any seed trained, else the first seed's status) and `reason`,
    `lr` (the task's peak learning rate), `recall_curve` (JSON text of
    [[examples seen, held-out recall], ...], the mean over the ok seeds), and
    `time_median_s` of the kernel cell with the same shapes (NaN where
    none was timed or it did not finish).
    """
    quality = quality_rows(frame)
    columns = [*CONFIG_KEYS, "family", "seeds", "seeds_ok", "recall", "recall_min", "recall_max", "recall_std",
               "loss_last", "train_s", "steps", "parameters", "state_size", "status", "reason", "lr", "recall_curve",
               "time_median_s"]
    if quality.empty:
        return pd.DataFrame(columns=columns)
    keys = list(CONFIG_KEYS)
    rows = []
    for key, group in quality.groupby(keys, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        recall = pd.to_numeric(ok["task_accuracy"], errors="coerce")
        first = group.sort_values("seed").iloc[0]
        rows.append({**dict(zip(keys, key, strict=True)), "family": first["family"],
                     "seeds": len(group), "seeds_ok": len(ok),
                     "recall": recall.mean() if len(ok) else float("nan"),
                     "recall_min": recall.min() if len(ok) else float("nan"),
                     "recall_max": recall.max() if len(ok) else float("nan"),
                     "recall_std": recall.std(ddof=1) if len(ok) > 1 else float("nan"),
                     "loss_last": pd.to_numeric(ok["task_loss_last"], errors="coerce").mean(),
                     "train_s": pd.to_numeric(ok["task_train_s"], errors="coerce").mean(),
                     "steps": first["task_steps"], "parameters": first["task_parameters"],
                     "state_size": first["task_state_size"],
                     "status": "ok" if len(ok) else first["status"],
                     "reason": "" if len(ok) else first["reason"],
                     "lr": _task_lr(first["task"]),
                     "recall_curve": mean_curve(ok.get("task_recall_curve", pd.Series(dtype=object)))})
    summary = pd.DataFrame(rows, columns=[c for c in columns if c != "time_median_s"])
    costs = kernel_rows(frame)
    costs = costs[costs["status"] == "ok"][list(SHAPE_KEYS) + ["time_median_s"]].drop_duplicates(list(SHAPE_KEYS))
    merged = merge_on_shapes(summary, costs)
    return merged[columns]


def best_over_learning_rates(summary: pd.DataFrame) -> pd.DataFrame:
    """Per configuration trained at several learning rates (tasks that differ only in `lr`), the row with the
    highest held-out recall, as Zoology keeps the best of its sweep. Adds `lrs` (every rate tried, as text);
    configurations trained at one rate pass through unchanged."""
    if summary.empty:
        return summary.assign(lrs=pd.Series(dtype=object))
    keys = [k for k in CONFIG_KEYS if k != "task" and k in summary.columns]
    summary = summary.assign(_sweep=[_task_without_lr(t) for t in summary["task"]],
                             _rank=pd.to_numeric(summary["recall"], errors="coerce").fillna(-1.0))
    kept = []
    for _key, group in summary.groupby([*keys, "_sweep"], sort=False, dropna=False):
        best = group.sort_values(["_rank", "lr"], ascending=[False, True], kind="stable").iloc[0]
        rates = sorted(float(r) for r in group["lr"] if r == r)
        kept.append({**best.to_dict(), "lrs": ", ".join(f"{r:g}" for r in rates)})
    return pd.DataFrame(kept).drop(columns=["_sweep", "_rank"]).reset_index(drop=True)


def mean_curve(curves: pd.Series) -> str:
    """The mean of learning curves stored as JSON text, point by point where they share their x values; else the first."""
    import json

    parsed = [json.loads(c) for c in curves if isinstance(c, str) and c]
    if not parsed:
        return "[]"
    xs = [tuple(x for x, _ in curve) for curve in parsed]
    if any(x != xs[0] for x in xs):
        return json.dumps(parsed[0])
    return json.dumps([[x, sum(curve[i][1] for curve in parsed) / len(parsed)] for i, x in enumerate(xs[0])])


def _task_lr(task: str) -> float:
    from attnbench.core.taskspec import parse_task

    try:
        return parse_task(str(task)).lr
    except ValueError:
        return float("nan")


def _task_without_lr(task: str) -> str:
    from attnbench.core.taskspec import parse_task

    try:
        return parse_task(str(task)).with_options(lr=1.0).text
    except ValueError:
        return str(task)


def state_knob(variant: str, params_json: str, head_dim: int) -> tuple[str, float] | None:
    """The knob that sets a variant's state in the report's words: ('features', 64), ('window', 32), ..."""
    import json

    params = json.loads(params_json) if isinstance(params_json, str) and params_json else {}
    for knob in ("features", "window", "state_dim"):
        if knob in params:
            return knob, params[knob]
    return ("head_dim", head_dim) if head_dim else None

"""Quality cells in the tidy frame: recall per trained configuration across seeds, beside its kernel cost.

Pure pandas (no torch). A *configuration* is a quality cell's case without
its seed: the same variant, knobs, shapes and task trained once per seed.
`recall_summary` gives one row per configuration and run: the mean recall,
its spread over seeds (min, max, standard deviation), the loss and time of
training, the state size, and the median time per call of the kernel cell
timed on the same shapes (`Suite.task_costs`), which is the quality-cost
pair a report plots.
"""

from __future__ import annotations

import pandas as pd

from attnbench.core.axes import AXES

# What makes a kernel cell the cost of a quality cell: every case column but the task and the seed.
SHAPE_KEYS = ("run_id", "variant", "params", *AXES.trained())
CONFIG_KEYS = (*SHAPE_KEYS, "task")


def shape_key(frame: pd.DataFrame) -> pd.Series:
    """One text per row of its `SHAPE_KEYS`, so that an unset axis (None or NaN) and 64 against 64.0 match."""
    def text(value) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    rows = frame[list(SHAPE_KEYS)].itertuples(index=False)
    return pd.Series(["\0".join(text(v) for v in row) for row in rows], index=frame.index, dtype=object)


def join_on_shape(left: pd.DataFrame, right: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`left` with the `columns` of the first row of `right` that has the same shape (`shape_key`), else NaN."""
    right = right.assign(_shape=shape_key(right)).drop_duplicates("_shape")[["_shape", *columns]]
    return left.assign(_shape=shape_key(left)).merge(right, on="_shape", how="left").drop(columns="_shape")


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
    and `time_median_s` of the kernel cell with the same shapes (NaN where
    none was timed or it did not finish).
    """
    quality = quality_rows(frame)
    columns = [*CONFIG_KEYS, "family", "seeds", "seeds_ok", "recall", "recall_min", "recall_max", "recall_std",
               "loss_last", "train_s", "steps", "parameters", "state_size", "status", "reason", "time_median_s"]
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
                     "reason": "" if len(ok) else first["reason"]})
    summary = pd.DataFrame(rows, columns=[c for c in columns if c != "time_median_s"])
    costs = kernel_rows(frame)
    merged = join_on_shape(summary, costs[costs["status"] == "ok"], ["time_median_s"])
    return merged[columns]


def state_knob(variant: str, params_json: str, head_dim: int) -> tuple[str, float] | None:
    """The knob that sets a variant's state in the report's words: ('features', 64), ('window', 32), ..."""
    import json

    params = json.loads(params_json) if isinstance(params_json, str) and params_json else {}
    for knob in ("features", "window", "state_dim"):
        if knob in params:
            return knob, params[knob]
    return ("head_dim", head_dim) if head_dim else None

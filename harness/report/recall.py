"""Quality cells compared across two runs: each trained configuration's mean recall over its seeds, and a verdict.

A configuration is a quality cell's case without its seed. 'lower' or
'higher' when the change is beyond both `RECALL_THRESHOLD` (0.02, two
points) and half the two sides' seed ranges together, else 'same'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from attnbench.core.units import finite
from attnbench.store import LoadedRun

RECALL_THRESHOLD = 0.02


@dataclass(frozen=True)
class RecallChange:
    """One trained configuration (a quality cell's case without its seed) in both runs, or in one."""

    label: str
    variant: str
    series: str
    task: str
    seq_len: int
    width: str
    base_recall: float | None
    new_recall: float | None
    base_seeds: int
    new_seeds: int
    base_range: float
    new_range: float
    base_status: str
    new_status: str
    verdict: str = "n/a"
    evidence: str = ""

    @property
    def delta(self) -> float | None:
        if self.base_recall is None or self.new_recall is None:
            return None
        return self.new_recall - self.base_recall


def compare_recall(base: LoadedRun, new: LoadedRun) -> list[RecallChange]:
    """Every trained configuration of either run, with its recall on each side and a verdict."""
    from attnbench.store import tidy_frame
    from attnbench.store.quality import CONFIG_KEYS, recall_summary

    summary = recall_summary(tidy_frame([base, new]))
    if summary.empty:
        return []
    keys = [k for k in CONFIG_KEYS if k != "run_id"]
    # an unset axis (kv_cache_bytes) is NaN here, and NaN != NaN would make one configuration two keys
    summary[keys] = summary[keys].astype(object).where(summary[keys].notna(), "none")
    sides = {run_id: rows.set_index(keys) for run_id, rows in summary.groupby("run_id")}
    empty = summary.iloc[0:0].set_index(keys)
    base_rows, new_rows = sides.get(base.run.run_id, empty), sides.get(new.run.run_id, empty)
    changes = []
    for key in sorted(set(base_rows.index) | set(new_rows.index), key=str):
        b = base_rows.loc[key] if key in base_rows.index else None
        n = new_rows.loc[key] if key in new_rows.index else None
        changes.append(_recall_change(dict(zip(keys, key, strict=True)), b, n))
    return changes


def _recall_change(config: dict[str, Any], b, n) -> RecallChange:
    params = json.loads(config["params"]) if config["params"] else {}
    series = config["variant"] + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
    width = f"d_model {int(config['heads']) * int(config['head_dim'])} = {config['heads']}×{config['head_dim']}"
    task = str(config["task"]).partition(":")[0]

    def side(row):
        if row is None:
            return None, 0, float("nan"), "absent"
        recall = finite(row["recall"]) if row["status"] == "ok" else None
        spread = (row["recall_max"] - row["recall_min"]) if recall is not None else float("nan")
        return recall, int(row["seeds_ok"]), spread, str(row["status"])

    base_recall, base_seeds, base_range, base_status = side(b)
    new_recall, new_seeds, new_range, new_status = side(n)
    change = RecallChange(label=f"{series} N={config['seq_len']} {width}", variant=config["variant"], series=series,
                          task=task, seq_len=int(config["seq_len"]), width=width,
                          base_recall=base_recall, new_recall=new_recall, base_seeds=base_seeds, new_seeds=new_seeds,
                          base_range=base_range, new_range=new_range, base_status=base_status, new_status=new_status)
    if change.delta is None:
        return change
    noise = 0.5 * sum(r for r in (base_range, new_range) if r == r)
    bar = max(RECALL_THRESHOLD, noise)
    verdict = "lower" if change.delta < -bar else "higher" if change.delta > bar else "same"
    evidence = (f"recall {base_recall:.3f} → {new_recall:.3f} ({change.delta:+.3f}; seeds {base_seeds} and "
                f"{new_seeds}; a change counts beyond {bar:.3f}: the larger of {RECALL_THRESHOLD} and half the "
                "seed ranges)")
    return RecallChange(**{**change.__dict__, "verdict": verdict, "evidence": evidence})

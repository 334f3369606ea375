"""The tidy frame, shaped for reports: workloads, series labels, peak bytes, baselines.

A *workload* is everything about a cell but the variant, its knobs and the
sequence length (device, dtype, mode, causal, batch, heads, head_dim, qk_std,
kv_len when it is not seq_len): one table and one figure each. A *series* is
one variant at one knob setting in one run: one row of a table, one line of
a plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core.case import Case
from harness.core.errors import AttnbenchError
from harness.store import LoadedRun, tidy_frame

WORKLOAD_AXES = ("device", "dtype", "mode", "causal", "mask", "score_mod", "batch", "heads", "kv_heads", "head_dim", "v_head_dim", "qk_std",
                 "kv")
ALWAYS_SHOWN = ("dtype", "causal", "mode", "head_dim")
EXACT_FAMILIES = ("naive", "flash")
ATTENTION_MAPS_FILE = "attention_maps.json"


@dataclass(frozen=True)
class ReportData:
    """The frame every section reads, with the names that label it."""

    frame: pd.DataFrame
    runs: tuple[LoadedRun, ...]
    run_labels: dict[str, str]
    baseline: str | None
    baseline_note: str

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    def workloads(self) -> list[tuple[str, pd.DataFrame]]:
        """(label, rows) per workload, in a stable order."""
        if self.frame.empty:
            return []
        groups = []
        for _key, rows in self.frame.groupby("workload_key", sort=True, dropna=False):
            groups.append((rows["workload"].iloc[0], rows))
        return groups


def prepare(runs: Sequence[LoadedRun], baseline: str | None = None) -> ReportData:
    """Load the tidy frame of `runs` and add the columns reports group and label by."""
    runs = tuple(runs)
    frame = tidy_frame(runs).copy()
    run_labels = _run_labels(runs)
    if frame.empty:
        return ReportData(frame=frame.assign(series="", run="", workload="", workload_key="", peak_bytes=None),
                          runs=runs, run_labels=run_labels, baseline=None, baseline_note="the runs hold no cells")
    frame["run"] = frame["run_id"].map(run_labels)
    # Which of `runs` a row came from: run ids alone cannot tell two copies of one run apart.
    frame["run_index"] = [i for i, loaded in enumerate(runs) for _ in loaded.cells]
    # The verdict's sentences, for the "Inaccurate cells" section (the tidy frame keeps only accuracy_ok).
    frame["accuracy_failures"] = [tuple(cell.result.accuracy.failures) if cell.result.accuracy else ()
                                  for loaded in runs for cell in loaded.cells]
    frame["kv"] = [("=seq_len" if kv == n else str(kv)) for kv, n in zip(frame["kv_len"], frame["seq_len"], strict=True)]
    frame["series"] = _series_labels(frame)
    frame["workload"], frame["workload_key"] = _workload_labels(frame)
    frame["peak_bytes"] = [_peak_bytes(mode, fwd, fwd_bwd) for mode, fwd, fwd_bwd in
                           zip(frame["mode"], frame["peak_bytes_fwd"], frame["peak_bytes_fwd_bwd"], strict=True)]
    frame["is_approximate"] = frame["approximates"].map(lambda a: isinstance(a, str) and bool(a))
    frame["is_subquadratic"] = [_is_subquadratic(f, c, a) for f, c, a in
                                zip(frame["family"], frame["computes"], frame["approximates"], strict=True)]
    frame = frame.sort_values(["workload_key", "variant", "series", "run", "seq_len"], kind="stable")
    chosen, note = choose_baseline(frame, baseline)
    return ReportData(frame=frame.reset_index(drop=True), runs=runs, run_labels=run_labels,
                      baseline=chosen, baseline_note=note)


def choose_baseline(frame: pd.DataFrame, requested: str | None) -> tuple[str | None, str]:
    """The baseline variant: `requested`, else sdpa-flash if measured, else naive, else none."""
    measured = set(frame.loc[frame["status"] == "ok", "variant"])
    present = set(frame["variant"])
    if requested is not None:
        if requested not in present:
            known = ", ".join(sorted(map(str, present))) or "none"
            raise AttnbenchError(f"--baseline {requested!r} is not a variant of these runs "
                                 f"(their variants: {known}); pick one of them")
        return requested, f"baseline: {requested} (chosen with --baseline)"
    for name in ("sdpa-flash", "naive"):
        if name in measured:
            return name, f"baseline: {name} (the default; change it with --baseline)"
    return None, "no baseline: neither sdpa-flash nor naive was measured; choose one with --baseline"


def attention_maps(run: LoadedRun) -> dict[str, Any] | None:
    """The run's attention_maps.json, or None if it has none. A damaged file raises AttnbenchError."""
    path = Path(run.path) / ATTENTION_MAPS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AttnbenchError(f"{path} cannot be read as JSON ({exc}); delete it or rerun the run") from None
    if not isinstance(data, dict) or "exact" not in data:
        raise AttnbenchError(f"{path} is not an attention map file (it has no 'exact' map)")
    return data


def samples_by_case(run: LoadedRun) -> dict[str, tuple[float, ...]]:
    """Raw per-call timing samples of every timed cell, by case id."""
    return {cell.case_id: tuple(cell.result.timing.samples_s)
            for cell in run.cells if cell.result.timing is not None}


def case_labels(run: LoadedRun) -> dict[str, str]:
    """Readable case labels (`Case.label`) by case id; the case id where a case does not parse."""
    labels = {}
    for cell in run.cells:
        try:
            labels[cell.case_id] = Case.from_dict(cell.case).label
        except (TypeError, ValueError):
            labels[cell.case_id] = cell.case_id
    return labels


def status_text(status: str, reason: str | None) -> str:
    """'oom: needs 4.0 GiB' for a cell that did not run; 'ok' otherwise."""
    if status == "ok":
        return "ok"
    return f"{status}: {reason}" if reason else str(status)


def _run_labels(runs: Sequence[LoadedRun]) -> dict[str, str]:
    names = [r.run.name or r.run.run_id for r in runs]
    unique = len(set(names)) == len(names)
    return {r.run.run_id: (name if unique else r.run.run_id) for r, name in zip(runs, names, strict=True)}


def _series_labels(frame: pd.DataFrame) -> list[str]:
    """'performer (features=64)': the variant and the knobs that vary for it across the frame."""
    varying: dict[str, list[str]] = {}
    params = frame["params"].map(lambda text: json.loads(text) if isinstance(text, str) and text else {})
    for variant, group in params.groupby(frame["variant"]):
        keys = sorted({k for p in group for k in p})
        varying[variant] = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in group}) > 1]
    labels = []
    for variant, knobs in zip(frame["variant"], params, strict=True):
        shown = varying.get(variant, [])
        if shown:
            inner = ", ".join(f"{k}={_knob_text(knobs.get(k))}" for k in shown)
            labels.append(f"{variant} ({inner})")
        else:
            labels.append(str(variant))
    return labels


def _knob_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _workload_labels(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    shown = [a for a in WORKLOAD_AXES if a in ALWAYS_SHOWN or frame[a].astype(str).nunique(dropna=False) > 1]
    labels, keys = [], []
    for _, row in frame[list(WORKLOAD_AXES)].iterrows():
        parts = []
        for axis in shown:
            value = row[axis]
            if axis == "causal":
                parts.append("causal" if bool(value) else "non-causal")
            elif axis in ("dtype", "mode", "device"):
                parts.append(str(value))
            elif axis == "kv":
                parts.append("kv_len=seq_len" if value == "=seq_len" else f"kv_len={value}")
            else:
                parts.append(f"{axis}={value}")
        labels.append(" · ".join(parts))
        keys.append(json.dumps([str(row[a]) for a in WORKLOAD_AXES]))
    return labels, keys


def _peak_bytes(mode: Any, fwd: Any, fwd_bwd: Any) -> float | None:
    chosen = fwd_bwd if mode == "fwd_bwd" and _present(fwd_bwd) else fwd
    return float(chosen) if _present(chosen) else None


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _is_subquadratic(family: Any, computes: Any, approximates: Any) -> bool:
    """Worth a crossover: not an exact softmax family, or approximating, or another function."""
    if isinstance(approximates, str) and approximates:
        return True
    if isinstance(computes, str) and computes and computes != "softmax_attention":
        return True
    return isinstance(family, str) and bool(family) and family not in EXACT_FAMILIES

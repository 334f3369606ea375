"""The tidy frame, shaped for reports: workloads, series labels, swept lengths, peak bytes, baselines.

A *workload* is everything about a cell but the variant, its knobs and the
length it sweeps (the axes declared `groups_reports` in
`attnbench.core.axes`, and the lengths it holds fixed): one table and one
figure each. A *series* is one variant at one
knob setting in one run: one row of a table, one line of a plot.

The swept length is the `length` column, named by `length_axis`, and every
table, plot and fit reads it instead of seq_len:

- self-attention (kv_len == seq_len): seq_len, as it always was;
- cross attention and decode (kv_len != seq_len): cells of one query length
  form a workload ("q_len 1", "decode q_len 1" up to `DECODE_MAX_Q_LEN`)
  swept over kv_len, unless a cell's kv_len was measured at more seq_lens
  than its seq_len at kv_lens (with the same other axes): a fixed context
  such as kv_len 77 against a seq_len sweep keeps the form it always had,
  one workload per kv_len ("kv_len=77") swept over seq_len;
- a cell whose batch its KV-cache size derives (`kv_cache_bytes`, set by a
  suite) is keyed by that size instead of its batch: a batch sweep at a fixed
  cache is one workload ("KV cache 16 MiB") over kv_len, its batch shown per
  length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.axes import AXES
from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.units import finite, format_bytes
from attnbench.store import LoadedRun, tidy_frame
from attnbench.store.quality import is_quality_row, join_on_shape, recall_summary
from attnbench.store.runs import ATTENTION_MAPS_FILE

ALWAYS_SHOWN = ("dtype", "causal", "mode", "head_dim")
DECODE_MAX_Q_LEN = 16
TRAFFIC_COLUMNS = ("bytes_moved", "bytes_per_s", "bandwidth_fraction")
EXACT_FAMILIES = ("naive", "flash")
EXACT_FUNCTION = "softmax_attention"
# What a reader may swap for what: exact softmax kernels, approximations of it, and other functions.
KINDS = ("exact", "approximate", "other")
KIND_TITLES = {"exact": "exact softmax attention", "approximate": "approximations of softmax attention",
               "other": "other functions (not drop-in for softmax attention)"}


def workload_axes() -> tuple[str, ...]:
    """The axes a workload is keyed by (`Axis.groups_reports`, registered ones included), and the kv form."""
    return (*(axis.name for axis in AXES.case_axes() if axis.groups_reports), "kv")


def shown_when_set() -> tuple[str, ...]:
    """Axes a workload's title names only when not at their default (none, kv_heads == heads, unset)."""
    return (*(axis.name for axis in AXES.case_axes() if axis.shown_when_set), "kv")


@dataclass(frozen=True)
class ReportData:
    """The frame every section reads, with the names that label it.

    `frame` holds the kernel (timing) cells only; the quality cells (a trained
    task) are in `task_cells`, and `tasks` is their `recall_summary` with
    `series` and `run` labels: the task quality section reads those two.
    """

    frame: pd.DataFrame
    runs: tuple[LoadedRun, ...]
    run_labels: dict[str, str]
    baseline: str | None
    baseline_note: str
    tasks: pd.DataFrame = field(default_factory=pd.DataFrame)
    task_cells: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    def calibration(self, run: str, dtype: str) -> tuple[float | None, float | None]:
        """(matmul peak FLOP/s for `dtype`, copy bandwidth B/s) of the run labelled `run`; None where not calibrated."""
        for loaded in self.runs:
            if self.run_labels[loaded.run.run_id] == run:
                calibration = loaded.run.calibration or {}
                peak = finite((calibration.get("matmul_flops_per_s") or {}).get(dtype))
                bandwidth = finite(calibration.get("copy_bytes_per_s"))
                return (peak if peak and peak > 0 else None), (bandwidth if bandwidth and bandwidth > 0 else None)
        return None, None

    def memory_bound(self, rows: pd.DataFrame) -> bool:
        """Whether a workload's traffic is worth showing: a decode workload, or one with a measured cell
        whose arithmetic intensity is below its run's ridge point (matmul peak / copy bandwidth)."""
        if bool(rows["decode"].any()):
            return True
        for r in rows[rows["status"] == "ok"].itertuples(index=False):
            intensity = finite(r.arithmetic_intensity)
            peak, bandwidth = self.calibration(str(r.run), str(r.dtype))
            if intensity is not None and peak is not None and bandwidth is not None and intensity < peak / bandwidth:
                return True
        return False

    def workloads(self) -> list[tuple[str, pd.DataFrame]]:
        """(label, rows) per workload, the one with the most cells first (the suite's main sweep), then by key."""
        if self.frame.empty:
            return []
        groups = []
        for key, rows in self.frame.groupby("workload_key", sort=True, dropna=False):
            groups.append((-len(rows), str(key), rows["workload"].iloc[0], rows))
        return [(label, rows) for _size, _key, label, rows in sorted(groups, key=lambda g: g[:2])]


def prepare(runs: Sequence[LoadedRun], baseline: str | None = None) -> ReportData:
    """Load the tidy frame of `runs` and add the columns reports group and label by.

    Quality cells are split off first (`ReportData.task_cells`), so that no
    timing table, plot, fit or baseline sees a cell that has no timing.
    """
    runs = tuple(runs)
    frame = tidy_frame(runs).copy()
    run_labels = _run_labels(runs)
    if not frame.empty:
        frame["run"] = frame["run_id"].map(run_labels)
        # Which of `runs` a row came from: run ids alone cannot tell two copies of one run apart.
        frame["run_index"] = [i for i, loaded in enumerate(runs) for _ in loaded.cells]
        # The verdict's sentences, for the "Inaccurate cells" section (the tidy frame keeps only accuracy_ok).
        frame["accuracy_failures"] = [tuple(cell.result.accuracy.failures) if cell.result.accuracy else ()
                                      for loaded in runs for cell in loaded.cells]
        if "kv_cache_bytes" not in frame.columns:     # the tidy frame does not carry it (yet): read the cases
            frame["kv_cache_bytes"] = [cell.case.get("kv_cache_bytes") for loaded in runs for cell in loaded.cells]
    tasks, task_cells = _task_frames(frame, run_labels)
    frame = frame[~is_quality_row(frame)].reset_index(drop=True)
    if frame.empty:
        return ReportData(frame=frame.assign(series="", run="", workload="", workload_key="", peak_bytes=None, kind="",
                                             length=None, length_axis="seq_len", decode=False),
                          runs=runs, run_labels=run_labels, baseline=None,
                          baseline_note="the runs hold no kernel cells" if len(task_cells) else "the runs hold no cells",
                          tasks=tasks, task_cells=task_cells)
    for column in TRAFFIC_COLUMNS:     # runs stored before the traffic columns
        if column not in frame.columns:
            frame[column] = None
    frame["kv_cache_bytes"] = pd.Series([int(v) if finite(v) is not None else None for v in frame["kv_cache_bytes"]],
                                        index=frame.index, dtype=object)
    frame["kv"], frame["length"], frame["length_axis"] = _swept_lengths(frame)
    frame["decode"] = [axis == "kv_len" and int(q) <= DECODE_MAX_Q_LEN
                       for axis, q in zip(frame["length_axis"], frame["seq_len"], strict=True)]
    frame["series"] = series_labels(frame)
    frame["workload"], frame["workload_key"] = _workload_labels(frame)
    frame["peak_bytes"] = [_peak_bytes(mode, fwd, fwd_bwd) for mode, fwd, fwd_bwd in
                           zip(frame["mode"], frame["peak_bytes_fwd"], frame["peak_bytes_fwd_bwd"], strict=True)]
    frame["is_approximate"] = frame["approximates"].map(lambda a: isinstance(a, str) and bool(a))
    frame["kind"] = [variant_kind(c, a) for c, a in zip(frame["computes"], frame["approximates"], strict=True)]
    frame["is_subquadratic"] = [_is_subquadratic(f, c, a) for f, c, a in
                                zip(frame["family"], frame["computes"], frame["approximates"], strict=True)]
    frame = frame.sort_values(["workload_key", "variant", "series", "run", "length"], kind="stable")
    chosen, note = choose_baseline(frame, baseline)
    return ReportData(frame=frame.reset_index(drop=True), runs=runs, run_labels=run_labels,
                      baseline=chosen, baseline_note=note, tasks=tasks, task_cells=task_cells)


def _task_frames(frame: pd.DataFrame, run_labels: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(recall summary, quality cells) of the frame, each with its `series` and `run` labels; the summary
    also says whether the kernel cell that gives its `time_median_s` was contended (`time_contended`)."""
    cells = frame[is_quality_row(frame)].reset_index(drop=True)
    summary = recall_summary(frame).reset_index(drop=True)
    kernels = frame[~is_quality_row(frame)]
    if "contended" in kernels.columns and len(summary):
        ok = kernels[kernels["status"] == "ok"].rename(columns={"contended": "time_contended"})
        summary = join_on_shape(summary, ok, ["time_contended"])
    else:
        summary["time_contended"] = None
    if cells.empty:
        return summary.assign(series=pd.Series(dtype=object), run=pd.Series(dtype=object)), cells
    labels = dict(zip(summary["params"] + "\0" + summary["variant"], series_labels(summary), strict=True))
    splits = summary.assign(width=summary["heads"] * summary["head_dim"]).groupby(["variant", "width"])["heads"].nunique()
    for table in (summary, cells):
        table["series"] = [labels.get(f"{p}\0{v}", str(v)) for p, v in zip(table["params"], table["variant"],
                                                                           strict=True)]
        # a variant trained at several head splits of one width: each split is its own series
        split = [splits.get((v, h * d), 1) > 1 for v, h, d in zip(table["variant"], table["heads"], table["head_dim"],
                                                                  strict=True)]
        table["series"] = [f"{s} · {h}×{d} heads" if many else s
                           for s, h, d, many in zip(table["series"], table["heads"], table["head_dim"], split,
                                                    strict=True)]
        table["run"] = table["run_id"].map(run_labels)
    return summary, cells


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


def process_medians_by_case(run: LoadedRun) -> dict[str, tuple[float, ...]]:
    """Each timed cell's per-process medians (`run --processes K`), or its one median: the unit `compare` tests."""
    medians = {}
    for cell in run.cells:
        if cell.result.timing is None:
            continue
        processes = (cell.result.telemetry or {}).get("processes") or {}
        stored = processes.get("medians_s") or ()
        medians[cell.case_id] = tuple(float(m) for m in stored) if len(stored) >= 2 else (
            float(cell.result.timing.median_s),)
    return medians


def case_labels(run: LoadedRun) -> dict[str, str]:
    """Readable case labels (`Case.label`) by case id; the case id where a case does not parse."""
    labels = {}
    for cell in run.cells:
        try:
            labels[cell.case_id] = Case.from_dict(cell.case).label
        except (TypeError, ValueError):
            labels[cell.case_id] = cell.case_id
    return labels


def length_axis(rows: pd.DataFrame) -> str:
    """The name of the length a workload's rows sweep: 'seq_len' or 'kv_len' (see the module's docstring)."""
    if "length_axis" in rows.columns and len(rows):
        return str(rows["length_axis"].iloc[0])
    return "seq_len"


def lengths(rows: pd.DataFrame) -> pd.Series:
    """The swept length of each row: the `length` column, seq_len for a frame without it."""
    return rows["length"] if "length" in rows.columns else rows["seq_len"]


def length_text(row: Any) -> str:
    """'seq_len 1024' or 'kv_len 4096': the swept length of one row, named."""
    axis = getattr(row, "length_axis", "seq_len")
    return f"{axis} {int(getattr(row, 'length', row.seq_len))}"


def seq_len_text(row: Any) -> str:
    """A row's seq_len for a 'seq_len' column: '1024', or '1 (kv_len 4096)' where kv_len is the swept length."""
    text = str(int(row.seq_len))
    return text + f" (kv_len {int(row.kv_len)})" if getattr(row, "length_axis", "seq_len") == "kv_len" else text


def status_text(status: str, reason: str | None) -> str:
    """'oom: needs 4.0 GiB' for a cell that did not run; 'ok' otherwise."""
    if status == "ok":
        return "ok"
    return f"{status}: {reason}" if reason else str(status)


def _run_labels(runs: Sequence[LoadedRun]) -> dict[str, str]:
    names = [r.run.name or r.run.run_id for r in runs]
    unique = len(set(names)) == len(names)
    return {r.run.run_id: (name if unique else r.run.run_id) for r, name in zip(runs, names, strict=True)}


def series_labels(frame: pd.DataFrame) -> list[str]:
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


def _swept_lengths(frame: pd.DataFrame) -> tuple[list[str], list[int], list[str]]:
    """Per row: the workload's fixed-length key ('=seq_len', 'q_len 1' or a kv_len), its swept length and its name."""
    base = _base_keys(frame)
    cross = (frame["kv_len"] != frame["seq_len"]).to_numpy()
    grid = pd.DataFrame({"base": base, "seq_len": frame["seq_len"], "kv_len": frame["kv_len"]})[cross]
    kv_lens_per_query = grid.groupby(["base", "seq_len"])["kv_len"].nunique()
    seq_lens_per_kv = grid.groupby(["base", "kv_len"])["seq_len"].nunique()
    swept = []
    for key, n, m in zip(base, frame["seq_len"], frame["kv_len"], strict=True):
        n, m = int(n), int(m)
        if n == m:
            swept.append(("=seq_len", n, "seq_len"))
        elif kv_lens_per_query[(key, n)] >= seq_lens_per_kv[(key, m)]:
            swept.append((f"q_len {n}", m, "kv_len"))
        else:
            swept.append((str(m), n, "seq_len"))
    kv, length, axis = zip(*swept, strict=True)
    return list(kv), list(length), list(axis)


def _base_keys(frame: pd.DataFrame) -> pd.Series:
    """The workload key without its lengths: the cells among which a length axis is chosen."""
    axes = [a for a in workload_axes() if a != "kv"]
    return pd.Series([json.dumps(values) for values in _key_values(frame)[axes].itertuples(index=False)],
                     index=frame.index)


def _key_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The workload axes as text; a batch that its KV-cache size derives is not part of the key."""
    values = pd.DataFrame({a: [str(v) for v in frame[a]] for a in workload_axes() if a in frame.columns},
                          index=frame.index)
    values.loc[frame["kv_cache_bytes"].notna(), "batch"] = "from kv_cache_bytes"
    return values


def _workload_labels(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    values = _key_values(frame)
    varying = {a for a in workload_axes() if values[a].nunique(dropna=False) > 1}
    shown = [a for a in workload_axes() if a in ALWAYS_SHOWN or a in shown_when_set() or a in varying]
    labels, keys = [], []
    for row, key in zip(frame.itertuples(index=False), values.itertuples(index=False), strict=True):
        parts = [part for axis in shown if (part := _axis_label(axis, row, axis in varying))]
        labels.append(" · ".join(parts))
        keys.append(json.dumps(list(key)))
    return labels, keys


def _axis_label(axis: str, row: Any, varying: bool) -> str:
    """One part of a workload label, or '' for an axis at its default."""
    value = getattr(row, axis)
    cached = row.kv_cache_bytes is not None
    if axis == "causal":
        return "causal" if bool(value) else "non-causal"
    if axis in ("dtype", "mode", "device"):
        return str(value)
    if axis in AXES.kind_axes():
        return "" if value == AXES[axis].default else AXES[axis].title_prefix + str(value)
    if axis == "batch":
        return "" if cached else f"batch={value}"
    if axis == "kv_cache_bytes":
        return f"KV cache {format_bytes(value)}" if cached else ""
    if axis == "heads":
        grouped = 1 < row.kv_heads < row.heads
        return "" if grouped or not varying else f"heads={value}"
    if axis == "kv_heads":
        if value == row.heads:
            return ""
        return "MQA" if value == 1 else f"GQA {row.heads}/{value}"
    if axis == "v_head_dim":
        return "" if value == row.head_dim else f"dv {value}"
    if axis == "kv":
        if value == "=seq_len":
            return ""
        if value.startswith("q_len "):
            return ("decode " if row.decode else "") + value
        return f"kv_len={value}"
    return f"{axis}={value}"


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


def variant_kind(computes: Any, approximates: Any) -> str:
    """'exact' (computes softmax attention, approximating nothing), 'approximate' (declares what it
    approximates) or 'other' (another function: additive, Luong, state-space scans, ...)."""
    if isinstance(approximates, str) and approximates:
        return "approximate"
    return "exact" if computes == EXACT_FUNCTION else "other"


def _is_subquadratic(family: Any, computes: Any, approximates: Any) -> bool:
    """Worth a crossover: not an exact softmax family, or approximating, or another function."""
    if isinstance(approximates, str) and approximates:
        return True
    if isinstance(computes, str) and computes and computes != "softmax_attention":
        return True
    return isinstance(family, str) and bool(family) and family not in EXACT_FAMILIES

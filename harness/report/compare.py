"""Compare two runs cell by cell: the ratio of medians with the worker process as the unit, a verdict
with its evidence, memory, error and accuracy changes, and regression gates.

Cells are matched by case id (the stable hash of the case). Every matched
cell that ran on both sides gets a verdict:

- 'slower' / 'faster' / 'same': from process medians (see below);
- 'too few samples': no raw samples were stored; the ratio of the stored
  medians is shown, untested;
- 'contended': a side's timing was taken while the process was descheduled
  (`Timing.contended`); its ratio is not trusted;
- 'one process': a side was measured in one worker process. Samples of one
  process share its luck (memory layout, core, clock), so their U test
  speaks about samples, not about the code: two runs of identical code on a
  shared 2-core machine differed by 0.663× to 1.513× with p down to 1e-32.
  The ratio and the within-process evidence are shown; the verdict points
  to `run --processes K` or `ab`.

The statistical unit is the worker process. When both sides were measured
in K ≥ 2 fresh processes (`run --processes K`), each side's process medians
are the sample: the ratio is of the medians of process medians, its range
runs from min(NEW)/max(BASE) to max(NEW)/min(BASE), and the verdict is
'slower' ('faster') when that whole range lies above (below) 1 and the
ratio is beyond the threshold, else 'same'.

A `median:PCT` gate fails a cell whose process range lies wholly above
1 + PCT. With one process on a side it fails only beyond the
between-process spread: the ratio must exceed (1 + PCT) × the largest
spread max/min of process medians seen in either run, or, where neither
run measured one, `PROCESS_SPREAD` (this machine's measured figure).
Contended cells never pass or fail a gate silently: they are listed as not
gated.

Quality cells (a trained task) have no timing: their configurations (the
case without its seed) are matched across the runs and compared by recall,
the mean over each side's seeds (`RecallChange`): 'lower' or 'higher' when
the change is beyond both `RECALL_THRESHOLD` (0.02, two points) and half the
two sides' seed ranges together, else 'same'. A ``recall:PCT`` gate fails
a configuration whose recall dropped by more than PCT points (``recall:5%``:
more than 0.05), or that trained in BASE and not in NEW.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.errors import AttnbenchError
from attnbench.core.machine import package_version
from attnbench.core.units import finite, format_bytes, format_seconds
from attnbench.report.data import (
    case_labels,
    length_text,
    prepare,
    process_medians_by_case,
    samples_by_case,
    status_text,
)
from attnbench.report.significance import (
    BOOTSTRAP_RESAMPLES,
    can_reach,
    mann_whitney_u,
    median_ratio_interval,
)
from attnbench.report.tables import format_error, format_value
from attnbench.store import LoadedRun

DEFAULT_THRESHOLD = 0.02
DEFAULT_ALPHA = 0.01
ERROR_FLOOR = 1e-6
GATE_FIELDS = {
    "median": "median time per call",
    "peak_memory": "peak bytes above the inputs",
    "error": "relative L2 error against the reference",
    "accuracy": "accuracy_ok against the variant's tolerance (no percentage)",
    "recall": "task recall of quality cells, an absolute drop in points (recall:5% fails a drop of more than 0.05)",
}
RECALL_THRESHOLD = 0.02
# The largest NEW/BASE seen between two single-process runs of identical code here (naive at N=1024: 1.513x;
# its mirror 0.663x): one process per side can hide a change of that size, so a gate on them fails only beyond it.
PROCESS_SPREAD = 1.52
VERDICTS = ("slower", "faster", "same", "one process", "too few samples", "contended", "n/a")
ONE_PROCESS = ("one worker process per side: its samples share that process's luck (memory layout, core, "
               "clock), which moves medians between processes by more than they show; measure both runs with "
               "`attnbench run --processes 3`, or gate with `attnbench ab`")
METHOD = ("the unit is the worker process: with runs measured by --processes K, the ratio NEW/BASE of the "
          "medians of process medians and its range min(NEW)/max(BASE) to max(NEW)/min(BASE); with one process "
          f"a side, the ratio of median times with a 95% percentile bootstrap interval (scipy.stats.bootstrap, "
          f"{BOOTSTRAP_RESAMPLES} resamples of each run's raw samples, fixed seed) and a two-sided Mann–Whitney U "
          "test (scipy.stats.mannwhitneyu) within the process, shown as evidence, verdict 'one process'")


@dataclass(frozen=True)
class CellComparison:
    """One case present in both runs."""

    case_id: str
    label: str
    variant: str
    series: str
    workload: str
    seq_len: int
    base_status: str
    new_status: str
    status_note: str = ""
    base_median: float | None = None
    new_median: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    p_value: float | None = None
    test: str = ""
    base_reps: int | None = None
    new_reps: int | None = None
    verdict: str = "n/a"
    evidence: str = ""
    base_memory: float | None = None
    new_memory: float | None = None
    memory_ratio: float | None = None
    base_error: float | None = None
    new_error: float | None = None
    error_ratio: float | None = None
    base_accuracy_ok: bool | None = None
    new_accuracy_ok: bool | None = None
    base_processes: tuple[float, ...] = ()
    new_processes: tuple[float, ...] = ()
    length: int = 0
    length_axis: str = "seq_len"

    @property
    def process_range(self) -> tuple[float, float] | None:
        """(min NEW / max BASE, max NEW / min BASE) of the process medians, with ≥ 2 processes a side."""
        if len(self.base_processes) < 2 or len(self.new_processes) < 2:
            return None
        return (min(self.new_processes) / max(self.base_processes),
                max(self.new_processes) / min(self.base_processes))

    @property
    def length_text(self) -> str:
        """'1024', or '1 (kv_len 4096)' where the workload sweeps kv_len at a fixed query length."""
        if self.length_axis == "kv_len":
            return f"{self.seq_len} (kv_len {self.length})"
        return str(self.seq_len)

    @property
    def inaccurate(self) -> bool:
        """NEW's output failed its variant's tolerance."""
        return self.new_accuracy_ok is False


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


@dataclass(frozen=True)
class Comparison:
    base: LoadedRun
    new: LoadedRun
    cells: list[CellComparison]
    only_base: list[dict[str, Any]]
    only_new: list[dict[str, Any]]
    environment_diff: list[tuple[str, str, str]]
    threshold: float
    alpha: float
    frame: pd.DataFrame = field(repr=False, default=None)
    recall: list[RecallChange] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for cell in self.cells:
            counts[cell.verdict] = counts.get(cell.verdict, 0) + 1
        counts["inaccurate in NEW"] = sum(cell.inaccurate for cell in self.cells)
        if self.recall:
            for verdict in ("recall lower", "recall higher", "recall same"):
                counts[verdict] = sum(change.verdict == verdict.removeprefix("recall ") for change in self.recall)
        return counts


@dataclass(frozen=True)
class Gate:
    """A regression gate such as ``median:5%``: fail when FIELD grows by more than `fraction`."""

    field: str
    fraction: float

    def __str__(self) -> str:
        return self.field if self.field == "accuracy" else f"{self.field}:{self.fraction * 100:g}%"


def parse_gate(text: str) -> Gate:
    """'median:5%' (or 'median:5') -> Gate('median', 0.05); 'accuracy' -> Gate('accuracy', 0); ValueError naming the allowed fields."""
    allowed = ", ".join(GATE_FIELDS)
    if str(text).strip().lower() == "accuracy":
        return Gate(field="accuracy", fraction=0.0)
    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*:\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not FIELD:PCT; write e.g. median:5% (FIELD one of {allowed}; "
                         "PCT a non-negative percentage such as 5% or 2.5)")
    name, pct = match.group(1).lower(), float(match.group(2))
    if name not in GATE_FIELDS or name == "accuracy":
        raise ValueError(f"{text!r}: unknown field {name!r}; FIELD must be one of {allowed}")
    return Gate(field=name, fraction=pct / 100)


def parse_fraction(text: str) -> float:
    """'2%' or '2' -> 0.02."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a percentage; write e.g. 2% or 2")
    return float(match.group(1)) / 100


def compare_runs(base: LoadedRun, new: LoadedRun, threshold: float = DEFAULT_THRESHOLD,
                 alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Match the cells of `base` and `new` by case id and compare each pair."""
    data = prepare([base, new])
    frame = data.frame
    rows = {(r.run_index, r.case_id): r for r in frame.itertuples(index=False)} if not frame.empty else {}
    base_samples, new_samples = samples_by_case(base), samples_by_case(new)
    base_processes, new_processes = process_medians_by_case(base), process_medians_by_case(new)
    labels = {**case_labels(new), **case_labels(base)}
    kernel_ids = {case_id for _, case_id in rows}
    base_ids, new_ids = base.case_ids() & kernel_ids, new.case_ids() & kernel_ids
    cells = []
    for case_id in sorted(base_ids & new_ids):
        b, n = rows[(0, case_id)], rows[(1, case_id)]
        cells.append(compare_cell(case_id, labels.get(case_id, case_id), b, n,
                                  base_samples.get(case_id, ()), new_samples.get(case_id, ()), threshold, alpha,
                                  base_processes.get(case_id, ()), new_processes.get(case_id, ())))
    cells.sort(key=lambda c: (c.workload, c.series, c.length, c.seq_len))

    def only(side: int, ids: set[str]) -> list[dict[str, Any]]:
        found = [rows[(side, i)] for i in ids]
        return [{"series": r.series, "workload": r.workload, "seq_len": int(r.seq_len), "label": labels.get(r.case_id),
                 "status": status_text(r.status, r.reason)}
                for r in sorted(found, key=lambda r: (r.workload, r.series, r.seq_len))]

    return Comparison(base=base, new=new, cells=cells, only_base=only(0, base_ids - new_ids),
                      only_new=only(1, new_ids - base_ids),
                      environment_diff=environment_diff(base.run.environment, new.run.environment),
                      threshold=threshold, alpha=alpha, frame=frame, recall=compare_recall(base, new))


def compare_recall(base: LoadedRun, new: LoadedRun) -> list[RecallChange]:
    """Every trained configuration of either run, with its recall on each side and a verdict."""
    from attnbench.store import tidy_frame
    from attnbench.store.quality import CONFIG_KEYS, recall_summary

    summary = recall_summary(tidy_frame([base, new]))
    if summary.empty:
        return []
    keys = [k for k in CONFIG_KEYS if k != "run_id"]
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
    import json

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


def compare_cell(case_id: str, label: str, b: Any, n: Any, base_samples, new_samples,
                 threshold: float, alpha: float, base_processes=(), new_processes=()) -> CellComparison:
    """One matched case: its verdict and the evidence for it (see the module's docstring)."""
    common = {"case_id": case_id, "label": label, "variant": str(n.variant), "series": str(n.series),
              "workload": str(n.workload), "seq_len": int(n.seq_len),
              "length": int(getattr(n, "length", n.seq_len)), "length_axis": str(getattr(n, "length_axis", "seq_len")),
              "base_status": str(b.status), "new_status": str(n.status),
              "base_accuracy_ok": _flag(getattr(b, "accuracy_ok", None)),
              "new_accuracy_ok": _flag(getattr(n, "accuracy_ok", None))}
    if b.status != "ok" or n.status != "ok":
        note = f"BASE {status_text(b.status, b.reason)}; NEW {status_text(n.status, n.reason)}"
        return CellComparison(**common, status_note=note)
    values: dict[str, Any] = {
        "base_median": finite(b.time_median_s), "new_median": finite(n.time_median_s),
        "base_memory": finite(b.peak_bytes), "new_memory": finite(n.peak_bytes),
        "base_error": finite(b.rel_l2_error), "new_error": finite(n.rel_l2_error),
        "base_reps": len(base_samples) or None, "new_reps": len(new_samples) or None,
    }
    values["base_processes"], values["new_processes"] = tuple(base_processes), tuple(new_processes)
    values["memory_ratio"] = _ratio(values["new_memory"], values["base_memory"])
    values["error_ratio"] = _ratio(values["new_error"], values["base_error"])
    contended = [side for side, row in (("BASE", b), ("NEW", n)) if _flag(getattr(row, "contended", None))]
    note = ""
    if base_samples and new_samples and min(base_samples) > 0 and min(new_samples) > 0:
        if not contended and len(base_processes) >= 2 and len(new_processes) >= 2:
            values.update(_process_verdict(tuple(base_processes), tuple(new_processes), threshold))
            return CellComparison(**common, status_note=note, **values)
        interval = median_ratio_interval(base_samples, new_samples)
        values.update(ratio=interval.ratio, ratio_low=finite(interval.low), ratio_high=finite(interval.high))
        if contended:
            values["verdict"] = "contended"
            values["evidence"] = (f"{' and '.join(contended)} timed while descheduled (contended); "
                                  f"ratio {interval.ratio:.3f} not trusted")
        else:
            values["verdict"] = "one process"
            within = (f"ratio {interval.ratio:.3f} [{_bound(interval.low)}, {_bound(interval.high)}] over the "
                      f"samples (n={len(base_samples)} and {len(new_samples)})")
            if can_reach(alpha, len(base_samples), len(new_samples)):
                test = mann_whitney_u(new_samples, base_samples)
                values.update(p_value=test.p_value, test=f"Mann–Whitney U ({test.method}), within one process")
                within += f", U test p={test.p_value:.2g} within the process"
            values["evidence"] = f"{within}; {ONE_PROCESS}"
    else:
        values["ratio"] = _ratio(values["new_median"], values["base_median"])
        note = "no raw samples stored: ratio of the stored medians only, no test"
        values["verdict"] = "contended" if contended else "too few samples"
        values["evidence"] = note
    return CellComparison(**common, status_note=note, **values)


def _process_verdict(base: tuple[float, ...], new: tuple[float, ...], threshold: float) -> dict[str, Any]:
    """The verdict with the worker process as the unit (see the module's docstring)."""
    import statistics

    ratio = statistics.median(new) / statistics.median(base)
    low, high = min(new) / max(base), max(new) / min(base)
    if low > 1 and ratio > 1 + threshold:
        verdict = "slower"
    elif high < 1 and ratio < 1 - threshold:
        verdict = "faster"
    else:
        verdict = "same"
    evidence = (f"ratio {ratio:.3f} of the medians of {len(base)} and {len(new)} process medians; "
                f"process range [{low:.3f}, {high:.3f}] (min NEW / max BASE, max NEW / min BASE)")
    return {"ratio": ratio, "ratio_low": low, "ratio_high": high, "verdict": verdict, "evidence": evidence,
            "test": f"process medians ({len(base)} and {len(new)} fresh processes)", "p_value": None}


def measured_process_spread(comparison: Comparison) -> float | None:
    """The largest max/min of one cell's process medians in either run, or None when no cell had 2+ processes."""
    spreads = [max(side) / min(side) for cell in comparison.cells
               for side in (cell.base_processes, cell.new_processes) if len(side) >= 2 and min(side) > 0]
    return max(spreads) if spreads else None


def _flag(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return bool(value)


def _bound(value: float) -> str:
    return "–" if finite(value) is None else f"{value:.3f}"


def environment_diff(base: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, BASE value, NEW value) for every key, nested ones dotted, whose value differs."""
    flat_base, flat_new = _flatten(base or {}), _flatten(new or {})
    missing = "(absent)"
    return [(key, format_value(flat_base.get(key, missing)), format_value(flat_new.get(key, missing)))
            for key in sorted(set(flat_base) | set(flat_new)) if flat_base.get(key, missing) != flat_new.get(key, missing)]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def gate_failures(comparison: Comparison, gates: list[Gate]) -> list[str]:
    """One line per (gate, cell) that regressed beyond the gate.

    median: with process medians on both sides, the process range lies
    wholly above 1 + PCT; with one process on a side, the ratio exceeds
    (1 + PCT) × the between-process spread (`measured_process_spread`, else
    `PROCESS_SPREAD`); without raw samples ('too few samples'), the ratio
    alone. A cell that was ok in BASE and did not run in NEW also fails it.
    Contended cells are not gated (see `ungated`).
    peak_memory: the memory ratio exceeds 1 + PCT.
    error: the error ratio exceeds 1 + PCT and NEW's error is above ERROR_FLOOR.
    accuracy: NEW's cell is not accuracy_ok against its variant's tolerance.
    """
    lines = []
    spread = measured_process_spread(comparison)
    band, band_source = (spread, "the largest between-process spread measured in these runs") if spread else (
        PROCESS_SPREAD, "this machine's between-process spread (PROCESS_SPREAD)")
    for gate in gates:
        limit = 1 + gate.fraction
        for cell in comparison.cells:
            where = f"{cell.series} at seq_len {cell.seq_len} ({cell.workload}; {cell.label})"
            if gate.field == "median":
                if cell.base_status == "ok" and cell.new_status != "ok":
                    lines.append(f"{gate}: {where}: ran in BASE but not in NEW ({cell.status_note})")
                elif cell.ratio is None or cell.ratio <= limit:
                    continue
                elif cell.process_range is not None and cell.process_range[0] > limit:
                    lines.append(f"{gate}: {where}: median {_pct(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"every NEW process slower than every BASE one by more: {cell.evidence}")
                elif cell.verdict == "one process" and cell.ratio > limit * band:
                    lines.append(f"{gate}: {where}: median {_pct(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"one process per side, and beyond {limit:g} × {band:.2f}, {band_source}")
                elif cell.verdict == "too few samples":
                    lines.append(f"{gate}: {where}: median {_pct(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"too few samples to test ({cell.evidence}), so the ratio alone fails the gate")
            elif gate.field == "peak_memory":
                if cell.memory_ratio is not None and cell.memory_ratio > limit:
                    lines.append(f"{gate}: {where}: peak memory {_pct(cell.memory_ratio)} "
                                 f"({format_bytes(cell.base_memory)} → {format_bytes(cell.new_memory)})")
            elif gate.field == "error":
                if (cell.error_ratio is not None and cell.error_ratio > limit
                        and cell.new_error is not None and cell.new_error > ERROR_FLOOR):
                    lines.append(f"{gate}: {where}: rel_l2_error {_pct(cell.error_ratio)} "
                                 f"({format_error(cell.base_error)} → {format_error(cell.new_error)})")
            elif gate.field == "accuracy" and cell.inaccurate:
                lines.append(f"{gate}: {where}: inaccurate in NEW (rel_l2_error {format_error(cell.new_error)} "
                             "exceeds the variant's tolerance)")
        if gate.field == "recall":
            for change in comparison.recall:
                if change.base_recall is not None and change.new_recall is None and change.new_status != "absent":
                    lines.append(f"{gate}: {change.task} {change.label}: trained in BASE (recall "
                                 f"{change.base_recall:.3f}) but not in NEW ({change.new_status})")
                elif change.delta is not None and change.delta < -gate.fraction:
                    lines.append(f"{gate}: {change.task} {change.label}: recall dropped {change.delta:+.3f}, "
                                 f"more than {gate.fraction:.3f} ({change.evidence})")
    return lines


def ungated(comparison: Comparison, gates: list[Gate]) -> list[str]:
    """Cells a median gate could not judge because a side was contended, one line each, and a line
    saying that one-process cells were gated only beyond the between-process spread."""
    if not any(g.field == "median" for g in gates):
        return []
    lines = [f"not gated: {c.series} at seq_len {c.seq_len} ({c.workload}): {c.evidence}"
             for c in comparison.cells if c.verdict == "contended"]
    single = sum(c.verdict == "one process" for c in comparison.cells)
    if single:
        spread = measured_process_spread(comparison) or PROCESS_SPREAD
        lines.append(f"gated only beyond the between-process spread ×{spread:.2f}: {single} cell(s) measured in "
                     f"one process per side; {ONE_PROCESS}")
    return lines


def print_comparison(comparison: Comparison, console=None) -> None:
    """The comparison as terminal tables (`attnbench.core.terminal`: every figure on one line, in a log too)."""
    from attnbench.core.terminal import make_console, print_table

    console = console or make_console()
    base, new = comparison.base.run, comparison.new.run
    _say(console, f"BASE {base.name} ({base.run_id})  NEW {new.name} ({new.run_id})")
    for table in comparison_tables(comparison):
        print_table(table, console)
    if not comparison.cells and not comparison.recall:
        _say(console, "No case is in both runs.")
    counts = comparison.counts()
    _say(console, ", ".join(f"{k}: {v}" for k, v in counts.items()) +
         f"  (the unit is the worker process: slower/faster need every NEW process median beyond every "
         f"BASE one and |ratio − 1| > {comparison.threshold:.1%} (run --processes K on both sides); "
         "'one process' when a side had one worker process)")
    inaccurate = [c for c in comparison.cells if c.inaccurate]
    if inaccurate:
        _say(console, f"{len(inaccurate)} cells are inaccurate in NEW (accuracy_ok false): " +
             "; ".join(f"{c.series} N={c.seq_len}" for c in inaccurate[:20]), "red")
    for title, items in (("only in BASE", comparison.only_base), ("only in NEW", comparison.only_new)):
        if items:
            _say(console, f"{len(items)} cells {title}: " +
                 "; ".join(f"{i['series']} N={i['seq_len']}" for i in items[:20]) + (" …" if len(items) > 20 else ""))
    if not comparison.environment_diff:
        _say(console, "The two environments are the same.")


def comparison_tables(comparison: Comparison) -> list:
    """The terminal tables of a comparison: one per workload of matched cells, task recall, environment keys."""
    from attnbench.core.terminal import Cell, TextTable

    colors = {"slower": "red", "faster": "green", "too few samples": "yellow", "contended": "yellow"}
    workloads: dict[str, list[CellComparison]] = {}
    for item in comparison.cells:
        workloads.setdefault(item.workload, []).append(item)
    tables = []
    for workload, cells in sorted(workloads.items(), key=lambda item: -len(item[1])):    # the main sweep first
        axis = "N" if cells[0].length_axis == "seq_len" else cells[0].length_axis
        columns = ("variant", axis, "BASE", "NEW", "NEW/BASE (95% CI)", "p", "n", "verdict", "mem", "err", "acc")
        rows = []
        for item in cells:
            verdict = item.verdict
            if verdict == "n/a" and item.status_note:
                verdict = f"did not run: BASE {item.base_status}, NEW {item.new_status}"
            rows.append((item.series, str(item.length or item.seq_len), format_seconds(item.base_median),
                         format_seconds(item.new_median), _ratio_text(item, compact=True),
                         "–" if item.p_value is None else f"{item.p_value:.2g}",
                         "–" if item.base_reps is None else f"{item.base_reps}/{item.new_reps}",
                         Cell((verdict,), colors.get(item.verdict)), _change(item.memory_ratio),
                         _change(item.error_ratio),
                         Cell((_accuracy_text(item),), "red" if item.inaccurate else None)))
        tables.append(TextTable.of(f"{workload}: {len(cells)} matched cells", columns, rows,
                                   numeric=(axis, "BASE", "NEW", "NEW/BASE (95% CI)", "p", "n", "mem", "err")))
    if comparison.recall:
        rows = []
        for change in comparison.recall:
            verdict = change.verdict if change.verdict != "n/a" else (
                f"BASE {change.base_status}, NEW {change.new_status}")
            rows.append((change.task, change.series, str(change.seq_len), change.width,
                         _recall_text(change.base_recall), _recall_text(change.new_recall),
                         "–" if change.delta is None else f"{change.delta:+.3f}",
                         f"{change.base_seeds}/{change.new_seeds}",
                         Cell((verdict,), {"lower": "red", "higher": "green"}.get(change.verdict))))
        tables.append(TextTable.of("task recall: trained configurations (mean over seeds)",
                                   ("task", "variant", "N", "width", "BASE", "NEW", "change", "seeds", "verdict"),
                                   rows, numeric=("N", "BASE", "NEW", "change")))
    if comparison.environment_diff:
        tables.append(TextTable.of("environment differences", ("key", "BASE", "NEW"), comparison.environment_diff))
    return tables


def _say(console, text: str, style: str | None = None) -> None:
    from rich.text import Text

    console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)


def build_compare_html(comparison: Comparison, gate_lines: list[str] | None = None,
                       gates: list[Gate] | None = None) -> str:
    from attnbench.report import plots

    frame = comparison.frame
    figures = []
    if frame is not None and not frame.empty:
        styles = plots.Styles(list(frame["series"]), list(frame["run"].unique()),
                              kinds=dict(zip(frame["series"], frame["kind"], strict=True)))
        groups = sorted(frame.groupby("workload", sort=True), key=lambda item: -len(item[1]))   # the main sweep first
        for workload, rows in groups:
            if rows["length"].nunique() > 1:
                figures.append({"workload": workload, "uri": plots.time_figure(rows, styles, True)})
            else:
                figures.append({"workload": workload, "uri": None,
                                "note": f"one length measured ({length_text(rows.iloc[0])}): no plot"})
    from attnbench.report.render import render
    from attnbench.report.runcard import when

    return render(
        "compare.html",
        title=f"attnbench compare: {comparison.base.run.name} → {comparison.new.run.name}",
        subtitle=METHOD + ".",
        version=package_version("attnbench") or "unknown",
        built_at=when(dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        base=comparison.base.run, new=comparison.new.run,
        base_label=_run_label(comparison.base), new_label=_run_label(comparison.new),
        base_started=when(comparison.base.run.started_at), new_started=when(comparison.new.run.started_at),
        rows=[_html_row(c) for c in comparison.cells],
        changes=biggest_changes(comparison),
        recall=[_recall_row(c) for c in comparison.recall],
        counts=comparison.counts(),
        threshold=f"{comparison.threshold:.1%}", alpha=f"{comparison.alpha:g}",
        only_base=comparison.only_base, only_new=comparison.only_new,
        environment_diff=comparison.environment_diff,
        figures=figures,
        gates=[str(g) for g in gates or []],
        gate_lines=gate_lines or [],
        method=METHOD,
    )


def biggest_changes(comparison: Comparison, limit: int = 5) -> list[dict[str, str]]:
    """The largest significant slowdowns, then speedups (at most `limit` each), for the page's summary."""
    found = []
    for verdict, reverse in (("slower", True), ("faster", False)):
        cells = sorted((c for c in comparison.cells if c.verdict == verdict and c.ratio is not None),
                       key=lambda c: c.ratio, reverse=reverse)
        found.extend({**_html_row(c), "change": _pct(c.ratio)} for c in cells[:limit])
    return found


def write_compare_report(comparison: Comparison, output: Path, gate_lines: list[str] | None = None,
                         gates: list[Gate] | None = None) -> Path:
    from attnbench.report.render import write_html

    html = build_compare_html(comparison, gate_lines, gates)
    try:
        return write_html(html, Path(output))
    except OSError as exc:
        raise AttnbenchError(f"cannot write the comparison to {output}: {exc.strerror or exc}; "
                             "choose another path with -o") from None


def _html_row(cell: CellComparison) -> dict[str, str]:
    return {"series": cell.series, "workload": cell.workload, "seq_len": cell.length_text, "label": cell.label,
            "base": format_seconds(cell.base_median), "new": format_seconds(cell.new_median),
            "ratio": _ratio_text(cell), "p": "–" if cell.p_value is None else f"{cell.p_value:.2g}",
            "verdict": cell.verdict, "note": cell.status_note or cell.evidence,
            "accuracy": _accuracy_text(cell),
            "memory": _change(cell.memory_ratio), "error": _change(cell.error_ratio),
            "errors": f"{format_error(cell.base_error)} → {format_error(cell.new_error)}"}


def _recall_row(change: RecallChange) -> dict[str, str]:
    verdict = change.verdict if change.verdict != "n/a" else f"BASE {change.base_status}, NEW {change.new_status}"
    return {"task": change.task, "series": change.series, "seq_len": str(change.seq_len), "width": change.width,
            "base": _recall_text(change.base_recall), "new": _recall_text(change.new_recall),
            "change": "–" if change.delta is None else f"{change.delta:+.3f}",
            "seeds": f"{change.base_seeds}/{change.new_seeds}", "verdict": verdict, "note": change.evidence}


def _recall_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ratio_text(cell: CellComparison, compact: bool = False) -> str:
    if cell.ratio is None:
        return "–"
    if cell.ratio_low is None:
        return f"{cell.ratio:.3f}"
    if compact:
        return f"{cell.ratio:.3f} ({cell.ratio_low:.3f}–{cell.ratio_high:.3f})"
    return f"{cell.ratio:.3f} [{cell.ratio_low:.3f}, {cell.ratio_high:.3f}]"


def _accuracy_text(cell: CellComparison) -> str:
    """'ok', 'INACCURATE', 'fixed' (inaccurate in BASE only) or '–' when not checked."""
    if cell.new_accuracy_ok is False:
        return "INACCURATE"
    if cell.base_accuracy_ok is False and cell.new_accuracy_ok:
        return "fixed"
    return "ok" if cell.new_accuracy_ok else "–"


def _change(ratio: float | None) -> str:
    return "–" if ratio is None else _pct(ratio)


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def _ratio(new: float | None, base: float | None) -> float | None:
    if new is None or base is None or base <= 0:
        return None
    return new / base


def _run_label(loaded: LoadedRun) -> str:
    return f"{loaded.run.name} ({loaded.run.run_id})"

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

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attnbench.core.metrics import METRICS
from attnbench.core.units import finite
from attnbench.report.data import (
    case_labels,
    prepare,
    process_medians_by_case,
    samples_by_case,
    status_text,
)
from attnbench.report.recall import RecallChange, compare_recall
from attnbench.report.significance import (
    BOOTSTRAP_RESAMPLES,
    can_reach,
    mann_whitney_u,
    median_ratio_interval,
)
from attnbench.report.tables import format_value
from attnbench.store import LoadedRun

DEFAULT_THRESHOLD = 0.02
DEFAULT_ALPHA = 0.01
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
    figures: dict[str, tuple[Any, Any]] = field(default_factory=dict)

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


def compare_cell(case_id: str, label: str, b: Any, n: Any, base_samples, new_samples,
                 threshold: float, alpha: float, base_processes=(), new_processes=()) -> CellComparison:
    """One matched case: its verdict and the evidence for it (see the module's docstring)."""
    common = {"case_id": case_id, "label": label, "variant": str(n.variant), "series": str(n.series),
              "workload": str(n.workload), "seq_len": int(n.seq_len),
              "length": int(getattr(n, "length", n.seq_len)), "length_axis": str(getattr(n, "length_axis", "seq_len")),
              "base_status": str(b.status), "new_status": str(n.status),
              "base_accuracy_ok": _flag(getattr(b, "accuracy_ok", None)),
              "new_accuracy_ok": _flag(getattr(n, "accuracy_ok", None)), "figures": _figures(b, n)}
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


def _figures(b: Any, n: Any) -> dict[str, tuple[Any, Any]]:
    """BASE's and NEW's value of every gated or compared metric (`attnbench.core.metrics`)."""
    def value(row, name):
        raw = getattr(row, name, None)
        return _flag(raw) if isinstance(raw, bool) else finite(raw) if isinstance(raw, int | float) else raw

    return {m.name: (value(b, m.name), value(n, m.name)) for m in METRICS if m.gate or m.compared}


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


def percent_text(ratio: float) -> str:
    """A ratio as a signed change: 1.052 -> '+5.2%'."""
    return f"{(ratio - 1) * 100:+.1f}%"


def _ratio(new: float | None, base: float | None) -> float | None:
    if new is None or base is None or base <= 0:
        return None
    return new / base

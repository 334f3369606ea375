"""Regression gates over a comparison: ``--fail-on FIELD:PCT`` parsed, and the cells that fail it.

The fields are the gated metrics of `attnbench.core.metrics` (`Metric.gate`).
median, peak_memory, error, accuracy and recall have the rules below; a
gated metric without its own rule (a plugin's) fails a cell whose value
moved the worse way by more than PCT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from attnbench.core.metrics import METRICS
from attnbench.core.units import format_bytes, format_seconds
from attnbench.report.compare import ONE_PROCESS, CellComparison, Comparison, percent_text
from attnbench.report.tables import format_error, format_value

ERROR_FLOOR = 1e-6
# The largest NEW/BASE seen between two single-process runs of identical code here (naive at N=1024: 1.513x;
# its mirror 0.663x): one process per side can hide a change of that size, so a gate on them fails only beyond it.
PROCESS_SPREAD = 1.52
OWN_RULES = ("median", "peak_memory", "error", "accuracy", "recall")


def gate_fields() -> dict[str, str]:
    """Gate name -> what it gates, for every gated metric (the flags, such as accuracy, take no percentage)."""
    return {gate: metric.doc + (" (no percentage)" if metric.unit == "" else "")
            for gate, metric in METRICS.gates().items()}


@dataclass(frozen=True)
class Gate:
    """A regression gate such as ``median:5%``: fail when FIELD grows by more than `fraction`."""

    field: str
    fraction: float

    def __str__(self) -> str:
        return self.field if gate_fields().get(self.field, "").endswith("(no percentage)") else \
            f"{self.field}:{self.fraction * 100:g}%"


def parse_gate(text: str) -> Gate:
    """'median:5%' (or 'median:5') -> Gate('median', 0.05); 'accuracy' -> Gate('accuracy', 0); ValueError naming the allowed fields."""
    fields = gate_fields()
    allowed = ", ".join(fields)
    if fields.get(str(text).strip().lower(), "").endswith("(no percentage)"):
        return Gate(field=str(text).strip().lower(), fraction=0.0)
    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*:\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not FIELD:PCT; write e.g. median:5% (FIELD one of {allowed}; "
                         "PCT a non-negative percentage such as 5% or 2.5)")
    name, pct = match.group(1).lower(), float(match.group(2))
    if name not in fields or fields[name].endswith("(no percentage)"):
        raise ValueError(f"{text!r}: unknown field {name!r}; FIELD must be one of {allowed}")
    return Gate(field=name, fraction=pct / 100)


def parse_fraction(text: str) -> float:
    """'2%' or '2' -> 0.02."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a percentage; write e.g. 2% or 2")
    return float(match.group(1)) / 100


def measured_process_spread(comparison: Comparison) -> float | None:
    """The largest max/min of one cell's process medians in either run, or None when no cell had 2+ processes."""
    spreads = [max(side) / min(side) for cell in comparison.cells
               for side in (cell.base_processes, cell.new_processes) if len(side) >= 2 and min(side) > 0]
    return max(spreads) if spreads else None


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
    recall: a trained configuration's recall dropped by more than PCT points, or it trained in BASE only.
    Any other gated metric: its value moved the worse way (`Metric.better`) by more than PCT.
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
                    lines.append(f"{gate}: {where}: median {percent_text(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"every NEW process slower than every BASE one by more: {cell.evidence}")
                elif cell.verdict == "one process" and cell.ratio > limit * band:
                    lines.append(f"{gate}: {where}: median {percent_text(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"one process per side, and beyond {limit:g} × {band:.2f}, {band_source}")
                elif cell.verdict == "too few samples":
                    lines.append(f"{gate}: {where}: median {percent_text(cell.ratio)} "
                                 f"({format_seconds(cell.base_median)} → {format_seconds(cell.new_median)}); "
                                 f"too few samples to test ({cell.evidence}), so the ratio alone fails the gate")
            elif gate.field == "peak_memory":
                if cell.memory_ratio is not None and cell.memory_ratio > limit:
                    lines.append(f"{gate}: {where}: peak memory {percent_text(cell.memory_ratio)} "
                                 f"({format_bytes(cell.base_memory)} → {format_bytes(cell.new_memory)})")
            elif gate.field == "error":
                if (cell.error_ratio is not None and cell.error_ratio > limit
                        and cell.new_error is not None and cell.new_error > ERROR_FLOOR):
                    lines.append(f"{gate}: {where}: rel_l2_error {percent_text(cell.error_ratio)} "
                                 f"({format_error(cell.base_error)} → {format_error(cell.new_error)})")
            elif gate.field == "accuracy" and cell.inaccurate:
                lines.append(f"{gate}: {where}: inaccurate in NEW (rel_l2_error {format_error(cell.new_error)} "
                             "exceeds the variant's tolerance)")
            elif gate.field not in OWN_RULES:
                lines.extend(filter(None, [_metric_failure(gate, cell, where)]))
        if gate.field == "recall":
            for change in comparison.recall:
                if change.base_recall is not None and change.new_recall is None and change.new_status != "absent":
                    lines.append(f"{gate}: {change.task} {change.label}: trained in BASE (recall "
                                 f"{change.base_recall:.3f}) but not in NEW ({change.new_status})")
                elif change.delta is not None and change.delta < -gate.fraction:
                    lines.append(f"{gate}: {change.task} {change.label}: recall dropped {change.delta:+.3f}, "
                                 f"more than {gate.fraction:.3f} ({change.evidence})")
    return lines


def _metric_failure(gate: Gate, cell: CellComparison, where: str) -> str | None:
    """A gated metric without its own rule: a flag that turned bad, or a value worse by more than PCT."""
    metric = METRICS.gates()[gate.field]
    base, new = cell.figures.get(metric.name, (None, None))
    if metric.unit == "":
        bad = new is False if metric.better == "higher" else new is True
        return f"{gate}: {where}: {metric.name} {base} → {new}" if bad else None
    if base is None or new is None or base <= 0:
        return None
    ratio = new / base
    worse = ratio > 1 + gate.fraction if metric.better == "lower" else ratio < 1 - gate.fraction
    if not worse:
        return None
    return f"{gate}: {where}: {metric.name} {percent_text(ratio)} ({format_value(base)} → {format_value(new)})"


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

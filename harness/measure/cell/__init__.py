"""Measure one cell in this process, whatever its kind, into a `Result`.

A cell kind (`CellKind`) says which cases it measures and how: the timed
kernel cell (`attnbench.measure.cell.kernel`: setup, timing, memory,
accuracy, derived figures, one module per stage) and the trained task cell
(`attnbench.tasks.cell`). `measure_case` asks the variant whether it can run
the case, then hands it to the first kind that takes it. Runs inside a
worker process; nothing here raises for a problem the variant causes.

What a cell stores is declared in `attnbench.core.metrics`: the figures
every table, export and gate reads (`METRICS`), and what stays in
``cells.jsonl`` for a reader (`RAW_FIELDS`, with the telemetry keys
explained there).

Warnings (high variation, load above the core count, CPU frequency change,
GPU throttling) go to `Result.warnings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.core.case import Case
from attnbench.core.failures import describe_exception
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import Variant
from attnbench.measure.cell.kernel import measure_kernel
from attnbench.store import now_iso


@dataclass(frozen=True)
class CellKind:
    """One kind of cell: which cases it takes, and how it measures one (`measure(case, variant, settings,
    calibration, progress, **base) -> Result`, never raising for what the variant does)."""

    name: str
    takes: Callable[[Case], bool]
    measure: Callable[..., Result]


def _measure_task(case, variant, settings, calibration, progress, **base) -> Result:
    from attnbench.tasks.cell import measure_quality

    return measure_quality(case, variant, progress, **base)


def _measure_kernel(case, variant, settings, calibration, progress, **base) -> Result:
    return measure_kernel(case, variant, settings, calibration, **base)


CELL_KINDS: tuple[CellKind, ...] = (
    CellKind("task", lambda case: case.is_quality, _measure_task),
    CellKind("kernel", lambda case: True, _measure_kernel),
)


def cell_kind(case: Case) -> CellKind:
    """The kind that measures `case`: the first of `CELL_KINDS` that takes it."""
    return next(kind for kind in CELL_KINDS if kind.takes(case))


def measure_case(case: Case, variant: Variant, settings: MeasureSettings,
                 calibration: dict | None = None, progress: Callable[[int, int, float], None] | None = None) -> Result:
    """Measure `case` with `variant`; never raises for what the variant does.

    A quality cell (`Case.task` set) is trained instead (`attnbench.tasks`);
    `progress(step, steps, loss)` hears its steps.
    """
    base = dict(started_at=now_iso(), worker={"threads": torch.get_num_threads()})
    try:
        reasons = variant.unsupported_reasons(case)
    except Exception as exc:
        return Result("error", f"unsupported_reasons raised {describe_exception(exc)}", **base)
    if reasons:
        return Result("unsupported", "; ".join(reasons), **base)
    return cell_kind(case).measure(case, variant, settings, calibration, progress, **base)

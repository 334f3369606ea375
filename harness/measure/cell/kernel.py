"""The timed kernel cell: setup, timing, memory and accuracy stages, then the derived figures, into a `Result`.

Runs inside a worker process. Every failure becomes a Result with a status
and a reason naming the stage; nothing here raises for a problem the variant
causes. The telemetry keys are listed in `attnbench.measure.cell`.
"""

from __future__ import annotations

import time

from attnbench.core.case import Case
from attnbench.core.failures import describe_exception, is_oom
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import Variant
from attnbench.measure.cell.accuracy import measure_accuracy
from attnbench.measure.cell.derived import derive_figures
from attnbench.measure.cell.memory import measure_memory
from attnbench.measure.cell.setup import prepare_step
from attnbench.measure.cell.timing import measure_timing


def measure_kernel(case: Case, variant: Variant, settings: MeasureSettings, calibration: dict | None,
                   **base) -> Result:
    """Time, and check the memory and accuracy of, one supported kernel case; `base` goes into the Result."""
    started = time.perf_counter()
    stage = "setup"
    timing = memory = accuracy = None
    warnings: list[str] = []
    telemetry: dict = {}
    try:
        prepared = prepare_step(case, variant)
        stage = "timing"
        timed = measure_timing(case, prepared, settings)
        timing = timed.timing
        telemetry.update(timed.telemetry)
        if prepared.setup_parts is not None:
            telemetry["setup_parts"] = prepared.setup_parts.to_dict()
        if prepared.compile_warmup_s:
            telemetry["compile_warmup_s"] = prepared.compile_warmup_s
        execution = variant.execution(case)
        if execution is not None:
            telemetry["execution"] = execution
        warnings.extend(timed.warnings)
        if settings.memory:
            stage, stage_started = "memory", time.perf_counter()
            memory, memory_warnings = measure_memory(case, variant, prepared.step)
            warnings.extend(memory_warnings)
            telemetry["memory_s"] = time.perf_counter() - stage_started
        if settings.accuracy:
            stage, stage_started = "accuracy", time.perf_counter()
            accuracy, accuracy_warnings = measure_accuracy(case, variant, prepared.step, settings)
            warnings.extend(accuracy_warnings)
            telemetry["accuracy_s"] = time.perf_counter() - stage_started
    except Exception as exc:
        status = "oom" if is_oom(exc) else "error"
        partial = dict(timing=timing, memory=memory, accuracy=accuracy, telemetry=telemetry)
        return Result(status, f"{stage} failed: {describe_exception(exc)}", warnings=tuple(warnings),
                      duration_s=time.perf_counter() - started, **partial, **base)

    derived = derive_figures(case, variant, timing.median_s, calibration)
    warnings.extend(derived.warnings)
    notes = telemetry.get("notes", []) + derived.telemetry.get("notes", [])
    telemetry.update(derived.telemetry)
    if notes:
        telemetry["notes"] = notes
    status, reason = "ok", ""
    if accuracy is not None and accuracy.output.nonfinite:
        status = "error"
        reason = (f"the output has {accuracy.output.nonfinite} non-finite values (NaN or inf); "
                  "timing and memory are kept")
    return Result(status, reason, timing=timing, memory=memory, accuracy=accuracy, flops=derived.flops,
                  performed_flops=derived.performed_flops, flops_per_s=derived.flops_per_s,
                  peak_fraction=derived.peak_fraction, telemetry=telemetry, warnings=tuple(warnings),
                  duration_s=time.perf_counter() - started, **base)

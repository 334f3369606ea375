"""One quality cell in a worker: check it can be trained, train it, and return its `Result`.

Never raises for what the variant or the training does: a variant without a
backward is 'unsupported' (before this runs, by its own reasons), a case MQAR
cannot be built on is 'skipped' with the reason, a diverged training is an
'error' that keeps the loss curve up to the divergence.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from attnbench.core.case import Case
from attnbench.core.failures import describe_exception, is_oom
from attnbench.core.result import Result
from attnbench.core.taskspec import parse_task
from attnbench.core.variant import Variant
from attnbench.tasks.mqar import check_shape
from attnbench.tasks.train import TrainingDiverged, train_recall

StepProgress = Callable[[int, int, float], None]


def quality_reasons(case: Case) -> list[str]:
    """Why `case` cannot be a quality cell (its shapes or mode); empty when it can."""
    spec = parse_task(case.task)
    reasons = check_shape(case.seq_len, spec.kv_pairs, spec.vocab)
    if case.mode != "fwd_bwd":
        reasons.append(f"a quality cell trains its model, so it needs mode = fwd_bwd, not {case.mode}")
    if case.kv_len != case.seq_len:
        reasons.append(f"the recall model attends within one sequence: needs kv_len == seq_len, got {case.kv_len}")
    if case.inputs != "iid":
        reasons.append(f"a quality cell's q, k and v come from the model, so its inputs axis must be iid, "
                       f"not {case.inputs}")
    return reasons


def measure_quality(case: Case, variant: Variant, progress: StepProgress | None = None, **base) -> Result:
    """Train `case`'s model with `variant` as the mixer and return recall as `Result.task`."""
    started = time.perf_counter()
    reasons = quality_reasons(case)
    if reasons:
        return Result("skipped", "; ".join(reasons), **base)
    try:
        outcome = train_recall(variant, case, progress)
    except TrainingDiverged as exc:
        return Result("error", str(exc), task=exc.outcome, duration_s=time.perf_counter() - started, **base)
    except Exception as exc:
        status = "oom" if is_oom(exc) else "error"
        return Result(status, f"training failed: {describe_exception(exc)}",
                      duration_s=time.perf_counter() - started, **base)
    return Result("ok", task=outcome, duration_s=time.perf_counter() - started, **base)

"""What one cell measured (`Result`) and what one sweep was (`Run`): frozen, JSON round-trippable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "skipped", "unsupported", "oom", "timeout", "crashed", "error")
RUN_STATUSES = ("running", "finished", "interrupted", "failed")


@dataclass(frozen=True)
class Timing:
    """Per-call times of the timed region, and how they were taken.

    samples_s: every raw sample, seconds per call (a sample may time
    `calls_per_sample` back-to-back calls and divide). median_s, iqr_s and
    the distribution-free 95% interval of the median (ci_low_s, ci_high_s)
    are computed from them. Setup (prepare, compile) and warm-up are kept
    apart in setup_s and warmup_s. stop_reason says what ended the
    repetitions: 'ci' (interval tight enough), 'budget' (time spent),
    'cap' (the per-cell cap reached before the interval's minimum samples) or
    'max_reps'. ci_low_s/ci_high_s are None when the samples are too few
    for any interval to reach 95% (`interval_reached` is False).
    cpu_share: per sample, the process CPU seconds over (wall seconds ×
    threads); contended is True when the cell's median sample stayed
    descheduled after `attempts` measurements (see attnbench.measure.contention).
    """

    samples_s: tuple[float, ...]
    median_s: float
    iqr_s: float
    ci_low_s: float | None
    ci_high_s: float | None
    calls_per_sample: int
    warmup_s: float
    warmup_calls: int
    setup_s: float
    stop_reason: str
    timer: str
    threads: int | None = None
    cpu_share: tuple[float, ...] = ()
    contended: bool = False
    attempts: int = 1

    @property
    def reps(self) -> int:
        return len(self.samples_s)

    @property
    def interval_reached(self) -> bool:
        return self.ci_low_s is not None and self.ci_high_s is not None


@dataclass(frozen=True)
class Memory:
    """Peak bytes allocated above the inputs, forward and forward+backward, and how measured.

    peak_bytes_*: the allocator's peak (CUDA caching allocator; on the CPU
    PyTorch's CPU allocator, from the profiler's memory events), which
    repeats exactly. resident_bytes_* (CPU): the resident high-water mark
    the call added, which also counts freed heap pages kept by the C
    library and so varies with heap layout.
    """

    peak_bytes_fwd: int | None
    peak_bytes_fwd_bwd: int | None
    method: str
    input_bytes: int
    predicted_bytes: int | None = None
    resident_bytes_fwd: int | None = None
    resident_bytes_fwd_bwd: int | None = None
    resident_method: str = ""


@dataclass(frozen=True)
class ErrorMetrics:
    """One tensor against its float64 reference.

    max_abs_error: max|out − ref|; rel_l2_error: ‖out − ref‖ / ‖ref‖;
    max_rel_error: max|out − ref| / max|ref|, the worst element in units of
    the reference's scale (None in cells stored before attnbench measured it);
    nonfinite: the count of NaN and inf values.
    """

    max_abs_error: float
    rel_l2_error: float
    nonfinite: int
    max_rel_error: float | None = None


@dataclass(frozen=True)
class Accuracy:
    """Output (and gradients) against the float64 reference of the same function.

    rows_checked is None when every query row was compared, else the number of
    seeded sample rows. approx holds the error against exact softmax attention
    for variants that approximate it (reported, never judged), and fidelity,
    for those that also give their attention weights, how closely the weights
    follow softmax's on a sample of query rows (`attnbench.measure.fidelity`:
    approx_kl, approx_entropy_ratio, approx_topk_mass, rows, top_k,
    negative_rows, dropped_mass; None where not computed, and in cells
    stored before it existed). ok is the
    verdict against the variant's declared `tolerance` for this dtype (None
    when not checked), whose bounds `tolerance` keeps (``rel_l2``,
    ``max_rel``, ``grad_rel_l2``, ``grad_max_rel``; cells judged before the
    bounds were scale-free keep ``max_abs`` and ``grad_max_abs``, absolute);
    failures says which metric exceeded which bound.
    """

    output: ErrorMetrics
    gradients: dict[str, ErrorMetrics] = field(default_factory=dict)
    approx: ErrorMetrics | None = None
    fidelity: dict[str, Any] | None = None
    rows_checked: int | None = None
    note: str = ""
    ok: bool | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskOutcome:
    """What a quality cell's training gave (`attnbench.tasks`): recall, the loss curve, the budget spent.

    accuracy: share of the held-out queries whose most likely next token is
    their value (recall), over `queries` queries. loss_first, loss_last: mean
    training loss over the first and last twentieth of the steps; loss_min:
    the lowest step loss; loss_curve: (step, mean loss of the steps since the
    previous point), 20 points. steps, examples: what was trained on;
    train_s, eval_s, setup_s: wall seconds of the loop, the held-out
    evaluation, and building the model (the variants' `prepare`).
    parameters: trainable parameters of the whole model. state_size: the
    elements one layer's mixer carries per sequence to produce the next token
    (`Variant.state_size`; None where the variant does not say).
    recall_curve: (examples seen, held-out recall) every few hundred steps
    and at the end: how fast the mixer learns recall. weight_change: per
    learned weight of the variant (`Variant.learned_weights`), how far
    training moved it, ‖w_end − w_start‖ / ‖w_start‖ over all layers.
    """

    task: str
    accuracy: float
    queries: int
    loss_first: float
    loss_last: float
    loss_min: float
    loss_curve: tuple[tuple[int, float], ...]
    steps: int
    train_s: float
    eval_s: float
    setup_s: float
    parameters: int
    examples: int
    state_size: int | None = None
    recall_curve: tuple[tuple[int, float], ...] = ()
    weight_change: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Result:
    """What one cell gave: a status, its reason, and whatever was measured."""

    status: str
    reason: str = ""
    timing: Timing | None = None
    memory: Memory | None = None
    accuracy: Accuracy | None = None
    flops: int | None = None
    performed_flops: int | None = None
    flops_per_s: float | None = None
    peak_fraction: float | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    worker: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration_s: float | None = None
    task: TaskOutcome | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a {self.status!r} result needs a reason")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        data = dict(data)
        timing = data.get("timing")
        if timing is not None:
            timing = dict(timing)
            timing["samples_s"] = tuple(timing.get("samples_s", ()))
            timing["cpu_share"] = tuple(timing.get("cpu_share") or ())
            data["timing"] = _build(Timing, timing)
        if data.get("memory") is not None:
            data["memory"] = _build(Memory, data["memory"])
        if data.get("accuracy") is not None:
            acc = dict(data["accuracy"])
            acc["output"] = _build(ErrorMetrics, acc["output"])
            acc["gradients"] = {k: _build(ErrorMetrics, v) for k, v in (acc.get("gradients") or {}).items()}
            if acc.get("approx") is not None:
                acc["approx"] = _build(ErrorMetrics, acc["approx"])
            acc["fidelity"] = dict(acc["fidelity"]) if acc.get("fidelity") is not None else None
            acc["failures"] = tuple(acc.get("failures") or ())
            data["accuracy"] = _build(Accuracy, acc)
        if data.get("task") is not None:
            task = dict(data["task"])
            task["loss_curve"] = tuple((int(step), float(loss)) for step, loss in task.get("loss_curve") or ())
            task["recall_curve"] = tuple((int(seen), float(recall)) for seen, recall in task.get("recall_curve") or ())
            task["weight_change"] = tuple((str(name), float(change)) for name, change in task.get("weight_change") or ())
            data["task"] = _build(TaskOutcome, task)
        data["warnings"] = tuple(data.get("warnings") or ())
        return _build(cls, data)


@dataclass(frozen=True)
class Run:
    """One execution of a suite: its identity, the suite text, and the machine it ran on."""

    run_id: str
    name: str
    suite_name: str
    suite_text: str
    started_at: str
    status: str = "running"
    ended_at: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    harness_version: str = ""
    format_version: int = 3  # the store's FORMAT_VERSION (attnbench.store.format); RunWriter stamps it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return _build(cls, data)


def _build(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})

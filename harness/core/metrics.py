"""Every figure a cell reports, declared once: its name, unit, source, better direction, gate and export.

A `Metric` reads its value from a stored `Result` (`source`); the tidy frame
(`attnbench.store.frame`) has one column per metric, in this order; the
CSV, Parquet and JSON exports are that frame, and the pytest-benchmark
export keeps every `exported` metric in `extra_info`; `compare` offers a
``--fail-on NAME:PCT`` gate for every metric with a `gate` name and shows
the change of every `compared` one; the report's tables take their columns'
units from here. A plugin (or a test) adds a figure with
`METRICS.register(Metric(...))`, reading it from `Result.telemetry`.

Everything else a cell stores (raw samples, the sampler's statistics,
counters and notes) stays in ``cells.jsonl`` and is listed in `RAW_FIELDS`
with where it is read; a test fails if a stored figure is in neither.

Imports nothing heavy: the store and the report read it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnbench.core.declared import Declarations
from attnbench.core.result import Result

BETTER = ("lower", "higher", None)


def recall_curve_text(curve) -> str:
    """A learning curve as JSON text, '[[examples seen, held-out recall], ...]' (one cell per row of the frame)."""
    return json.dumps([[int(seen), float(recall)] for seen, recall in curve])


@dataclass(frozen=True)
class Metric:
    """One figure of a cell.

    name: its tidy column (and `extra_info` key); unit: 's', 'bytes',
    'FLOP', 'FLOP/s', 'J', '1' (a ratio or count) or '' (text, a flag);
    path: where a stored `Result` keeps it ('timing.median_s',
    'telemetry.bytes_moved'); doc: what it is; better: 'lower', 'higher' or None (not a quality); gate: the name
    of its ``compare --fail-on`` field, or None; exported: kept in the
    pytest-benchmark export's `extra_info`; compared: `compare` shows its
    BASE → NEW change per cell; source: reads it from a `Result` where the
    value is not the one at `path` (a maximum over gradients, joined text).
    """

    name: str
    unit: str
    path: str
    doc: str
    better: str | None = None
    gate: str | None = None
    exported: bool = True
    compared: bool = False
    source: Callable[[Result], Any] | None = None

    def __post_init__(self) -> None:
        if self.better not in BETTER:
            raise ValueError(f"metric {self.name!r}: better must be one of {BETTER}, not {self.better!r}")
        if self.gate is not None and self.better is None:
            raise ValueError(f"metric {self.name!r}: a gated metric needs a better direction")

    def read(self, result: Result) -> Any:
        """This metric's value in `result`, or None where the cell has none."""
        return self.source(result) if self.source else read_path(result, self.path)


class MetricRegistry(Declarations[Metric]):
    """The declared metrics, in column order; `register` adds one (a plugin's, or a test's)."""

    what = "metric"

    def gates(self) -> dict[str, Metric]:
        """Gate name -> metric, for every gated metric."""
        return {m.gate: m for m in self if m.gate}


def _grad_rel_l2(result: Result) -> float | None:
    grads = result.accuracy.gradients if result.accuracy else {}
    return max((g.rel_l2_error for g in grads.values()), default=None)


def read_path(result: Result, path: str) -> Any:
    """The value at a dotted `path` of a Result ('timing.median_s', 'telemetry.bytes_moved'), or None."""
    value: Any = result
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


METRICS = MetricRegistry((
    Metric("time_median_s", "s", "timing.median_s", "median time per call", "lower", gate="median",
           compared=True),
    Metric("time_iqr_s", "s", "timing.iqr_s", "interquartile range of the samples"),
    Metric("time_ci_low_s", "s", "timing.ci_low_s", "95% interval of the median, low end (None under 6 samples)"),
    Metric("time_ci_high_s", "s", "timing.ci_high_s", "95% interval of the median, high end"),
    Metric("reps", "1", "timing.reps", "timed samples"),
    Metric("calls_per_sample", "1", "timing.calls_per_sample", "calls timed together in one sample"),
    Metric("setup_s", "s", "timing.setup_s", "prepare and the first call, outside the timing", "lower"),
    Metric("setup_compile_s", "s", "telemetry.setup_parts.compile_s",
           "of setup_s, torch.compile's own time (cache loads included)", "lower"),
    Metric("setup_prepare_s", "s", "telemetry.setup_parts.prepare_s",
           "of setup_s, the rest of prepare (weights, masks, block masks)", "lower"),
    Metric("setup_first_call_s", "s", "telemetry.setup_parts.first_call_s",
           "of setup_s, the first call without its compiles", "lower"),
    Metric("execution", "", "telemetry.execution",
           "which way of computing the function ran, for a variant that chooses per case (longformer)"),
    Metric("warmup_s", "s", "timing.warmup_s", "warm-up before the timed samples"),
    Metric("stop_reason", "", "timing.stop_reason", "what ended the repetitions: ci, budget or max_reps"),
    Metric("threads", "1", "timing.threads", "torch threads the cell was timed with"),
    Metric("contended", "", "timing.contended", "timed while the process was descheduled: no verdict trusts it"),
    Metric("peak_bytes_fwd", "bytes", "memory.peak_bytes_fwd", "peak bytes above the inputs (the forward's)",
           "lower", gate="peak_memory", compared=True),
    Metric("peak_bytes_fwd_bwd", "bytes", "memory.peak_bytes_fwd_bwd",
           "peak bytes of forward and backward above the inputs", "lower"),
    Metric("predicted_bytes", "bytes", "memory.predicted_bytes", "the variant's memory_model of the forward"),
    Metric("resident_bytes_fwd", "bytes", "memory.resident_bytes_fwd", "CPU: resident high-water mark (VmHWM)"),
    Metric("max_abs_error", "1", "accuracy.output.max_abs_error", "max |out - ref| against the float64 reference",
           "lower"),
    Metric("rel_l2_error", "1", "accuracy.output.rel_l2_error", "relative L2 error against the reference, ||out - ref|| / ||ref||",
           "lower", gate="error",
           compared=True),
    Metric("max_rel_error", "1", "accuracy.output.max_rel_error", "max |out - ref| / max |ref|", "lower"),
    Metric("nonfinite", "1", "accuracy.output.nonfinite", "NaN and inf values in the output", "lower"),
    Metric("grad_max_rel_l2_error", "1", "accuracy.gradients", "the largest relative L2 error of dq, dk, dv", "lower",
           source=_grad_rel_l2),
    Metric("approx_max_abs_error", "1", "accuracy.approx.max_abs_error", "max |out - exact softmax attention|", "lower"),
    Metric("approx_rel_l2_error", "1", "accuracy.approx.rel_l2_error", "relative L2 error against exact softmax",
           "lower"),
    Metric("approx_kl", "1", "accuracy.fidelity.approx_kl", "KL of the exact weights from the approximation's", "lower"),
    Metric("approx_entropy_ratio", "1", "accuracy.fidelity.approx_entropy_ratio", "entropy of the weights over exact"),
    Metric("approx_topk_mass", "1", "accuracy.fidelity.approx_topk_mass", "weight mass kept on the exact top keys",
           "higher"),
    Metric("approx_dropped_mass", "1", "accuracy.fidelity.dropped_mass", "exact weight mass the variant cannot see",
           "lower"),
    Metric("accuracy_ok", "", "accuracy.ok",
           "accuracy_ok against the variant's tolerance", "higher", gate="accuracy", compared=True),
    Metric("flops", "FLOP", "flops", "useful FLOPs of the function (backward 2.5x the forward)"),
    Metric("performed_flops", "FLOP", "performed_flops", "FLOPs the variant really executes"),
    Metric("flops_per_s", "FLOP/s", "flops_per_s", "useful FLOPs over the median time", "higher"),
    Metric("peak_fraction", "1", "peak_fraction", "FLOP/s over the calibrated matmul peak", "higher"),
    Metric("arithmetic_intensity", "FLOP/byte", "telemetry.arithmetic_intensity",
           "forward FLOPs over q, k, v read and the output written once"),
    Metric("roofline_fraction", "1", "telemetry.roofline_fraction", "FLOP/s over the roofline's bound",
           "higher"),
    Metric("bytes_moved", "bytes", "telemetry.bytes_moved", "the least bytes a call must read and write"),
    Metric("bytes_per_s", "bytes/s", "telemetry.bytes_per_s", "bytes_moved over the median time", "higher"),
    Metric("bandwidth_fraction", "1", "telemetry.bandwidth_fraction", "bytes/s over the calibrated copy bandwidth",
           "higher"),
    Metric("energy_j", "J", "telemetry.energy_j_per_call", "energy per call (RAPL or NVML)", "lower"),
    Metric("warnings", "", "warnings", "warnings raised while measuring", source=lambda r: "; ".join(r.warnings)),
    Metric("task_accuracy", "1", "task.accuracy", "task recall of quality cells (a gate's PCT is an absolute drop in points: "
           "recall:5% fails a drop of more than 0.05)", "higher", gate="recall"),
    Metric("task_queries", "1", "task.queries", "held-out queries recall is measured on"),
    Metric("task_loss_first", "1", "task.loss_first", "training loss at the first step"),
    Metric("task_loss_last", "1", "task.loss_last", "training loss at the last step", "lower"),
    Metric("task_loss_min", "1", "task.loss_min", "lowest training loss", "lower"),
    Metric("task_steps", "1", "task.steps", "training steps"),
    Metric("task_examples", "1", "task.examples", "training examples seen"),
    Metric("task_train_s", "s", "task.train_s", "training time", "lower"),
    Metric("task_parameters", "1", "task.parameters", "trainable parameters of the model"),
    Metric("task_state_size", "1", "task.state_size", "the mixer's recurrent state size per head"),
    Metric("task_recall_curve", "", "task.recall_curve",
           "the learning curve: held-out recall against examples seen, as JSON [[examples, recall], ...]",
           source=lambda r: recall_curve_text(r.task.recall_curve) if r.task else None),
    # Ragged batches (issue #28): the `lengths` and `layout` axes.
    Metric("padding_waste", "1", "telemetry.padding_waste",
           "a ragged batch's executed over useful work: the query-key pairs its layout forms over the real "
           "sequences' (padded: B·N_max·M_max / Σ q_i·m_i; packed: 1)", "lower"),
    Metric("imbalance", "1", "telemetry.imbalance",
           "a ragged batch's longest sequence's work over the mean sequence's (its pairs, causal counted; 1 when equal)"),
))

# What a cell stores besides the metrics, kept in cells.jsonl for a person or a later analysis, by path.
# A key ending in '_' covers every path it starts (the sampler's `cpu_percent_mean`, `cpu_percent_max`, ...).
# The telemetry keys: `cv` (coefficient of variation), `outliers` (Tukey's fences at 1.5 IQR: count, indices
# into timing.samples_s, fences; flagged, never dropped), `rel_ci_half_width` reached and `target_rel_ci`,
# `timed_calls`, `timed_wall_s`; the seconds of the memory and accuracy stages, `memory_s` and `accuracy_s`
# (the float64 reference included); the roofline's bound `roofline_flops_per_s` (min(peak, intensity x copy
# bandwidth)) and `roofline_bound` ('compute'/'memory'); the sampler's (attnbench.measure.telemetry, 20 Hz)
# `cpu_percent_*`, `rss_bytes_*`, `cpu_freq_mhz_*`, on CUDA `gpu_util_percent_*`, `gpu_memory_used_bytes_*`,
# `gpu_power_w_*`, `gpu_sm_clock_mhz_*`, `gpu_throttle_reasons`, its own cost `sampler_busy_fraction`, and
# `load_avg_1m`; the energy counter's `energy_j_total`, `energy_interval_s`, `energy_source`;
# `worker_live_bytes_after` (what the worker holds after the timed calls, which the local executor compares
# with its restart budget); `contention` (per timing attempt: the median sample's run-queue wait, CPU share,
# the signal and the limit; attnbench.measure.contention); `notes` (counters missing here: a note, not an
# error); and with --processes K, `processes` (attnbench.measure.merge).
RAW_FIELDS = (
    "status", "reason", "worker", "started_at", "duration_s", "timing.samples_s",
    "timing.warmup_calls", "timing.timer", "timing.cpu_share", "timing.attempts", "memory.method",
    "memory.input_bytes", "memory.resident_bytes_fwd_bwd", "memory.resident_method", "accuracy.rows_checked",
    "accuracy.approx.max_rel_error", "accuracy.approx.nonfinite", "accuracy.note", "accuracy.tolerance", "accuracy.failures", "accuracy.fidelity.rows", "accuracy.fidelity.top_k",
    "accuracy.fidelity.negative_rows", "task.task", "task.loss_curve", "task.weight_change", "task.eval_s", "task.setup_s",
    "telemetry.cv", "telemetry.outliers", "telemetry.rel_ci_half_width", "telemetry.target_rel_ci",
    "telemetry.timed_calls", "telemetry.timed_wall_s", "telemetry.memory_s", "telemetry.accuracy_s",
    "telemetry.roofline_flops_per_s", "telemetry.roofline_bound",
    "telemetry.cpu_percent_", "telemetry.rss_bytes_", "telemetry.cpu_freq_mhz_", "telemetry.gpu_",
    "telemetry.sampler_", "telemetry.load_avg_1m", "telemetry.energy_j_total", "telemetry.energy_interval_s",
    "telemetry.energy_source", "telemetry.worker_live_bytes_after", "telemetry.contention", "telemetry.notes",
    "telemetry.processes", "telemetry.setup_parts",
)


def declared(path: str) -> bool:
    """Whether a stored path is a metric's (or inside one's) or listed in `RAW_FIELDS`."""
    paths = [m.path for m in METRICS] + list(RAW_FIELDS)
    return any(path == p or path.startswith(p + ".") or (p.endswith("_") and path.startswith(p)) for p in paths)

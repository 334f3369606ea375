"""Measure one cell in this process: setup, timing, memory and accuracy, into a `Result`.

Runs inside a worker process. Every failure becomes a Result with a status
and a reason; nothing here raises for a problem the variant causes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace

import torch

from harness.accuracy import error_metrics
from harness.case import Case
from harness.inputs import make_inputs, make_output_grad, upcast
from harness.memory import cpu_peak_bytes, cuda_peak_bytes
from harness.reference import softmax_attention
from harness.result import Accuracy, Memory, Result, Timing
from harness.settings import MeasureSettings
from harness.stats import summarize
from harness.timing import time_cpu, time_cuda
from harness.variant import AttentionInputs, Variant

BACKWARD_FLOPS_FACTOR = 2
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def now_iso() -> str:
    from harness.store import now_iso as store_now

    return store_now()


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in OOM_MARKERS)


def describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:500]}{where}"


class _Step:
    """The timed callable: the forward, plus the backward of its output in fwd_bwd mode."""

    def __init__(self, case: Case, inputs: AttentionInputs, forward: Callable[[], torch.Tensor]) -> None:
        self.case = case
        self.inputs = inputs
        self.forward = forward
        self.grad_output: torch.Tensor | None = None

    def __call__(self):
        if self.case.mode == "fwd":
            with torch.inference_mode():
                return self.forward()
        out = self.forward()
        if self.grad_output is None:
            self.grad_output = make_output_grad(self.case, out)
        return torch.autograd.grad(out, self.inputs.tensors(), self.grad_output)

    def forward_only(self):
        if self.case.mode == "fwd":
            with torch.inference_mode():
                return self.forward()
        return self.forward()


def measure_case(case: Case, variant: Variant, settings: MeasureSettings,
                 calibration: dict | None = None) -> Result:
    """Measure `case` with `variant`; never raises for what the variant does."""
    started_at, started = now_iso(), time.perf_counter()
    base = dict(started_at=started_at, worker={"threads": torch.get_num_threads()})
    try:
        reasons = variant.unsupported_reasons(case)
    except Exception as exc:
        return Result("error", f"unsupported_reasons raised {describe_exception(exc)}", **base)
    if reasons:
        return Result("unsupported", "; ".join(reasons), **base)
    stage = "setup"
    timing = memory = accuracy = None
    warnings: list[str] = []
    try:
        torch.manual_seed(case.seed)
        inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
        sync = _sync_for(case)
        setup_start = time.perf_counter()
        forward = variant.prepare(case, inputs)
        step = _Step(case, inputs, forward)
        step()
        sync()
        setup_s = time.perf_counter() - setup_start

        stage = "timing"
        timed = time_cuda(step, settings) if case.device == "cuda" else time_cpu(step, settings)
        summary = summarize(timed.samples_s)
        timing = Timing(samples_s=timed.samples_s, median_s=summary.median, iqr_s=summary.iqr,
                        ci_low_s=summary.ci_low, ci_high_s=summary.ci_high,
                        calls_per_sample=timed.calls_per_sample, warmup_s=timed.warmup_s,
                        warmup_calls=timed.warmup_calls, setup_s=setup_s, stop_reason=timed.stop_reason,
                        timer=timed.timer, threads=torch.get_num_threads())

        if settings.memory:
            stage = "memory"
            memory = _measure_memory(case, variant, step)

        if settings.accuracy:
            stage = "accuracy"
            accuracy, accuracy_warnings = _measure_accuracy(case, variant, step, settings)
            warnings.extend(accuracy_warnings)
    except Exception as exc:
        status = "oom" if is_oom(exc) else "error"
        partial = dict(timing=timing, memory=memory, accuracy=accuracy)
        return Result(status, f"{stage} failed: {describe_exception(exc)}", warnings=tuple(warnings),
                      duration_s=time.perf_counter() - started, **partial, **base)

    flops = _total_flops(case, variant)
    flops_per_s = flops / timing.median_s if flops and timing.median_s > 0 else None
    peak = (calibration or {}).get("matmul_flops_per_s", {}).get(case.dtype)
    peak_fraction = flops_per_s / peak if flops_per_s and peak else None
    telemetry = {"arithmetic_intensity": _arithmetic_intensity(case, variant)}
    status, reason = "ok", ""
    if accuracy is not None and accuracy.output.nonfinite:
        status = "error"
        reason = (f"the output has {accuracy.output.nonfinite} non-finite values (NaN or inf); "
                  "timing and memory are kept")
    return Result(status, reason, timing=timing, memory=memory, accuracy=accuracy, flops=flops,
                  flops_per_s=flops_per_s, peak_fraction=peak_fraction, telemetry=telemetry,
                  warnings=tuple(warnings), duration_s=time.perf_counter() - started, **base)


def _sync_for(case: Case) -> Callable[[], None]:
    if case.device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _total_flops(case: Case, variant: Variant) -> int | None:
    try:
        forward = int(variant.flops(case))
    except NotImplementedError:
        return None
    return forward * (1 + BACKWARD_FLOPS_FACTOR) if case.mode == "fwd_bwd" else forward


def _arithmetic_intensity(case: Case, variant: Variant) -> float | None:
    """Useful forward FLOPs over the least bytes moved: q, k, v read once and the output written once."""
    try:
        flops = variant.flops(case)
    except NotImplementedError:
        return None
    output_bytes = case.batch * case.heads * case.seq_len * case.head_dim * case.element_bytes
    return flops / (case.input_bytes + output_bytes)


def _measure_memory(case: Case, variant: Variant, step: _Step) -> Memory:
    peak = (lambda fn: cuda_peak_bytes(fn)) if case.device == "cuda" else cpu_peak_bytes
    fwd = peak(step.forward_only)
    fwd_bwd = peak(step) if case.mode == "fwd_bwd" else None
    predicted = variant.memory_model(case)
    return Memory(peak_bytes_fwd=fwd.peak_bytes, peak_bytes_fwd_bwd=fwd_bwd.peak_bytes if fwd_bwd else None,
                  method=fwd.method, input_bytes=case.input_bytes, predicted_bytes=predicted)


def _sample_rows(case: Case, settings: MeasureSettings, variant: Variant) -> torch.Tensor | None:
    if case.seq_len * case.kv_len <= settings.accuracy_max_pairs or not variant.reference_rows:
        return None
    generator = torch.Generator().manual_seed(case.seed + 7)
    count = min(settings.accuracy_rows, case.seq_len)
    return torch.randperm(case.seq_len, generator=generator)[:count].sort().values


def _measure_accuracy(case: Case, variant: Variant, step: _Step, settings: MeasureSettings):
    warnings: list[str] = []
    rows = _sample_rows(case, settings, variant)
    with_grads = case.mode == "fwd_bwd" and rows is None
    out = step.forward_only()
    again = step.forward_only()
    if out.shape == again.shape and not torch.equal(out, again):
        spread = float((out.detach().double() - again.detach().double()).abs().max())
        warnings.append(f"non-deterministic: two calls on the same inputs differ by up to {spread:.3g}")
    del again
    inputs64 = upcast(step.inputs, requires_grad=with_grads)
    reference = variant.reference(case, inputs64, rows=rows)
    expected = reference if rows is None else None
    if out.shape[-2] == case.seq_len and rows is not None:
        out_rows = out.detach()[..., rows.to(out.device), :]
    else:
        out_rows = out.detach()
    if expected is None:
        expected = reference
    output_metrics = error_metrics(out_rows, expected)

    gradients = {}
    if with_grads:
        grad_out = make_output_grad(case, out)
        grads = torch.autograd.grad(out, step.inputs.tensors(), grad_out, allow_unused=True)
        ref_grads = torch.autograd.grad(reference, inputs64.tensors(), grad_out.detach().to("cpu", torch.float64),
                                        allow_unused=True)
        for name, got, want in zip("qkv", grads, ref_grads, strict=True):
            if got is not None and want is not None:
                gradients[name] = error_metrics(got, want)

    approx = None
    if variant.approximates == "softmax_attention":
        q, k, v = (t.detach() for t in inputs64.tensors())
        exact = softmax_attention(q, k, v, causal=case.causal, rows=rows)
        approx = error_metrics(out_rows, exact)
    note = "" if rows is None else f"reference evaluated on {len(rows)} seeded query rows"
    if case.mode == "fwd_bwd" and rows is not None:
        note += "; gradients not checked at this size"
    accuracy = Accuracy(output=output_metrics, gradients=gradients, approx=approx,
                        rows_checked=None if rows is None else len(rows), note=note)
    return accuracy, warnings


def fwd_only_case(case: Case) -> Case:
    return replace(case, mode="fwd")

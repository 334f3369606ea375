"""Measure one cell in this process: setup, timing, memory and accuracy, into a `Result`.

Runs inside a worker process. Every failure becomes a Result with a status
and a reason; nothing here raises for a problem the variant causes.

Besides timing, memory and accuracy, a cell's `Result.telemetry` holds:

- samples: ``cv`` (coefficient of variation), ``outliers`` (Tukey's fences at
  1.5·IQR: count, indices into ``timing.samples_s``, fences; flagged, never
  dropped), ``rel_ci_half_width`` reached and ``target_rel_ci``,
  ``timed_calls``, ``timed_wall_s``; ``timing.stop_reason`` says what ended
  the repetitions ('ci', 'budget', 'max_reps');
- roofline: ``arithmetic_intensity`` (forward FLOPs over q, k, v read and the
  output written once), and with a calibration ``roofline_flops_per_s``
  (min(peak, intensity × copy bandwidth)), ``roofline_bound``
  ('compute'/'memory') and ``roofline_fraction``;
- traffic: ``bytes_moved`` (`Case.bytes_moved`: the least bytes a call must
  read and write), ``bytes_per_s`` (that over the median time) and, with a
  calibration, ``bandwidth_fraction`` (that over the run's copy bandwidth):
  the figures of a memory-bound cell such as a decode step;
- the sampler (`attnbench.measure.telemetry`, 20 Hz): ``cpu_percent_*``,
  ``rss_bytes_*``, ``cpu_freq_mhz_*`` (mean/min/max, before/after), on CUDA
  ``gpu_util_percent_*``, ``gpu_memory_used_bytes_*``, ``gpu_power_w_*``,
  ``gpu_sm_clock_mhz_*``, ``gpu_throttle_reasons``; ``sampler_busy_fraction``
  is the sampler's own cost; ``load_avg_1m``;
- energy: ``energy_j_per_call`` (the store's ``energy_j`` column),
  ``energy_j_total``, ``energy_interval_s``, ``energy_source``;
- ``worker_live_bytes_after``: what the worker holds after the timed calls
  (resident bytes after releasing free heap pages on the CPU), which the
  local executor compares with its restart budget;
- ``contention``: per timing attempt, the median sample's run-queue wait
  fraction, CPU share and median, the signal used and the limit, and whether
  the cell stayed contended (see `attnbench.measure.contention`);
- ``setup_parts``: `setup_s` split into ``compile_s`` (torch.compile, cache loads
  included), ``prepare_s`` (the rest of `prepare`: weights, masks, block masks)
  and ``first_call_s`` (`attnbench.measure.setup_parts`);
- ``execution``: which way of computing the function ran, for a variant that
  chooses per case (`Variant.execution`: longformer's 'banded' or 'dense');
- ``notes``: counters that are missing here (a note, not an error);
- with ``--processes K``: ``processes`` (see `merge_process_results`).

Warnings (high variation, load above the core count, CPU frequency change,
GPU throttling) go to `Result.warnings`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from attnbench.attention.masks import case_mask_mod
from attnbench.attention.reference import softmax_attention
from attnbench.attention.score_mods import case_score_mod
from attnbench.core.case import Case
from attnbench.core.result import Accuracy, Memory, Result, Timing
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import AttentionInputs, Variant
from attnbench.measure.accuracy import error_metrics, judge
from attnbench.measure.calibration import bandwidth_for, peak_for
from attnbench.measure.contention import measure_until_quiet
from attnbench.measure.failures import describe_exception, is_oom
from attnbench.measure.fidelity import fidelity_rows, measure_fidelity, takes_rows
from attnbench.measure.inputs import make_inputs, make_output_grad, upcast
from attnbench.measure.memory import (
    cpu_allocated_peak_bytes,
    cpu_peak_bytes,
    cuda_peak_bytes,
    leak_warning,
    live_bytes,
    model_warning,
)
from attnbench.measure.setup_parts import SetupClock
from attnbench.measure.stats import (
    coefficient_of_variation,
    relative_spread,
    summarize,
    tukey_outliers,
)
from attnbench.measure.telemetry import (
    EnergyMeter,
    Nvml,
    TelemetrySampler,
    load_average_1m,
    telemetry_warnings,
)
from attnbench.measure.timing import TimedSamples, time_cpu, time_cuda
from attnbench.store import now_iso

# A backward counts 2.5 forwards (the FlashAttention/TritonBench convention): fwd_bwd = 3.5 × forward.
BACKWARD_FLOPS_FACTOR = 2.5
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
                 calibration: dict | None = None, progress=None) -> Result:
    """Measure `case` with `variant`; never raises for what the variant does.

    A quality cell (`Case.task` set) is trained instead (`attnbench.tasks`);
    `progress(step, steps, loss)` hears its steps.
    """
    started_at, started = now_iso(), time.perf_counter()
    base = dict(started_at=started_at, worker={"threads": torch.get_num_threads()})
    try:
        reasons = variant.unsupported_reasons(case)
    except Exception as exc:
        return Result("error", f"unsupported_reasons raised {describe_exception(exc)}", **base)
    if reasons:
        return Result("unsupported", "; ".join(reasons), **base)
    if case.is_quality:
        from attnbench.tasks.cell import measure_quality

        return measure_quality(case, variant, progress, **base)
    stage = "setup"
    timing = memory = accuracy = None
    warnings: list[str] = []
    telemetry: dict = {}
    try:
        torch.manual_seed(case.seed)
        inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
        sync = _sync_for(case)
        setup_start, clock = time.perf_counter(), SetupClock()
        forward = variant.prepare(case, inputs)
        clock.prepared()
        step = _Step(case, inputs, forward)
        step()
        sync()
        setup_s = time.perf_counter() - setup_start
        telemetry["setup_parts"] = clock.parts().to_dict()

        stage = "timing"
        held_before = live_bytes(case.device)
        watch = CellTelemetry(case, settings)
        with watch:
            measured = measure_until_quiet(lambda: _time_once(case, step, settings, watch), settings)
        timed = measured.timed
        telemetry.update(watch.summary(timed))
        summary = summarize(timed.samples_s)
        telemetry.update(timing_quality(timed, summary, settings))
        execution = variant.execution(case)
        if execution is not None:
            telemetry["execution"] = execution
        telemetry["contention"] = measured.telemetry()
        warnings.extend(telemetry_warnings(telemetry, cv=telemetry["cv"], cv_limit=settings.warn_cv))
        contended = measured.warning(torch.get_num_threads())
        warnings.extend([contended] if contended else [])
        timing = Timing(samples_s=timed.samples_s, median_s=summary.median, iqr_s=summary.iqr,
                        ci_low_s=summary.ci_low, ci_high_s=summary.ci_high,
                        calls_per_sample=timed.calls_per_sample, warmup_s=timed.warmup_s,
                        warmup_calls=timed.warmup_calls, setup_s=setup_s, stop_reason=timed.stop_reason,
                        timer=timed.timer, threads=torch.get_num_threads(), cpu_share=timed.cpu_share,
                        contended=measured.contended, attempts=measured.attempts)

        held_after = live_bytes(case.device)
        telemetry["worker_live_bytes_after"] = held_after
        leak = leak_warning(held_before, held_after, timed.warmup_calls + timed.timed_calls)
        warnings.extend([leak] if leak else [])

        if settings.memory:
            stage = "memory"
            memory = _measure_memory(case, variant, step)
            optimistic = model_warning(memory.peak_bytes_fwd, memory.predicted_bytes)
            warnings.extend([optimistic] if optimistic else [])

        if settings.accuracy:
            stage = "accuracy"
            accuracy, accuracy_warnings = _measure_accuracy(case, variant, step, settings)
            warnings.extend(accuracy_warnings)
    except Exception as exc:
        status = "oom" if is_oom(exc) else "error"
        partial = dict(timing=timing, memory=memory, accuracy=accuracy, telemetry=telemetry)
        return Result(status, f"{stage} failed: {describe_exception(exc)}", warnings=tuple(warnings),
                      duration_s=time.perf_counter() - started, **partial, **base)

    flops = _total_flops(case, variant)
    flops_per_s = flops / timing.median_s if flops and timing.median_s > 0 else None
    peak = peak_for(calibration, case.device, case.dtype)
    peak_fraction = flops_per_s / peak if flops_per_s and peak else None
    if peak_fraction is not None and peak_fraction > 1.05:
        warnings.append(f"{peak_fraction:.0%} of the calibrated {case.dtype} matmul peak: the calibration "
                        "underestimates this machine (taken under load?); rerun with --recalibrate")
    telemetry["arithmetic_intensity"] = _arithmetic_intensity(case, variant)
    telemetry.update(_roofline(telemetry["arithmetic_intensity"], peak, calibration, flops_per_s, case.device))
    telemetry.update(_traffic(case, timing.median_s, calibration))
    if peak is None and flops_per_s:
        telemetry.setdefault("notes", []).append(
            f"no peak_fraction: the run has no calibrated matmul peak for {case.dtype} on {case.device}")
    status, reason = "ok", ""
    if accuracy is not None and accuracy.output.nonfinite:
        status = "error"
        reason = (f"the output has {accuracy.output.nonfinite} non-finite values (NaN or inf); "
                  "timing and memory are kept")
    return Result(status, reason, timing=timing, memory=memory, accuracy=accuracy, flops=flops,
                  performed_flops=_total_flops(case, variant, performed=True),
                  flops_per_s=flops_per_s, peak_fraction=peak_fraction, telemetry=telemetry,
                  warnings=tuple(warnings), duration_s=time.perf_counter() - started, **base)


def _time_once(case: Case, step: _Step, settings: MeasureSettings, watch: CellTelemetry) -> TimedSamples:
    """One attempt at the timed repetitions (warm-up included), with the energy read around them."""
    if case.device == "cuda":
        return time_cuda(step, settings, on_timed_start=watch.timed_start, on_timed_stop=watch.timed_stop)
    return time_cpu(step, settings, threads=torch.get_num_threads(), on_timed_start=watch.timed_start,
                    on_timed_stop=watch.timed_stop)


class CellTelemetry:
    """The sampler and the energy meter around one cell's timing; never raises for a missing counter.

    The sampler runs around warm-up and the timed repetitions; the energy
    counter is read by `timed_start`/`timed_stop`, which the timing loops call
    just outside the first and last timed repetition.
    """

    def __init__(self, case: Case, settings: MeasureSettings) -> None:
        self.case = case
        self.enabled = settings.telemetry
        self.notes: list[str] = []
        self.sampler = self.meter = None
        self.energy_j: float | None = None
        self.energy_s = 0.0
        if not self.enabled:
            return
        nvml = None
        if case.device == "cuda":
            nvml, note = _nvml_for_process()
            if note:
                self.notes.append(note)
        try:
            self.sampler = TelemetrySampler(case.device, settings.telemetry_hz, nvml)
        except Exception as exc:  # psutil missing or refusing: a note, not an error
            self.notes.append(f"no sampler: {describe_exception(exc)}")
        self.meter = EnergyMeter(case.device, nvml)
        if self.meter.note:
            self.notes.append(self.meter.note)

    def __enter__(self) -> CellTelemetry:
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def timed_start(self) -> None:
        if self.meter is not None and self.meter.source:
            self.meter.start()

    def timed_stop(self) -> None:
        if self.meter is not None and self.meter.source:
            self.energy_j, self.energy_s = self.meter.stop()

    def summary(self, timed: TimedSamples) -> dict:
        out: dict = {"load_avg_1m": load_average_1m()}
        if not self.enabled:
            out["notes"] = ["telemetry off (measure.telemetry = false)"]
            return out
        if self.sampler is not None:
            out.update(self.sampler.summary())
        if self.meter is not None and self.meter.source:
            out["energy_source"] = self.meter.source
            if self.energy_j is not None and timed.timed_calls:
                out["energy_j_total"] = self.energy_j
                out["energy_interval_s"] = self.energy_s
                out["energy_j_per_call"] = self.energy_j / timed.timed_calls
                if self.energy_j == 0:
                    self.notes.append("the energy counter did not move during the timed calls "
                                      "(the interval is shorter than its update period)")
            elif self.meter.note:
                self.notes.append(self.meter.note)
        if self.notes:
            out["notes"] = list(dict.fromkeys(self.notes))
        return out


_NVML: tuple[Nvml | None, str] | None = None


def _nvml_for_process() -> tuple[Nvml | None, str]:
    """NVML opened once per worker process (it is slow to initialise)."""
    global _NVML
    if _NVML is None:
        _NVML = Nvml.open()
    return _NVML


def timing_quality(timed: TimedSamples, summary, settings: MeasureSettings) -> dict:
    """Telemetry about the samples themselves: spread, outliers (flagged, never dropped), the stop."""
    outliers = tukey_outliers(timed.samples_s)
    return {
        "cv": coefficient_of_variation(timed.samples_s),
        "outliers": outliers.to_dict(),
        "rel_ci_half_width": summary.rel_half_width if math.isfinite(summary.rel_half_width) else None,
        "target_rel_ci": settings.target_rel_ci,
        "timed_wall_s": timed.timed_wall_s,
        "timed_calls": timed.timed_calls,
    }


def merge_process_results(results: list[Result]) -> Result:
    """One cell measured in K fresh processes: one Result keeping the spread between processes.

    The cell's `median_s` is the median of the K per-process medians: each
    fresh process (its own allocations, memory layout, clocks) counts once,
    however many samples its adaptive stop took, so one unlucky process moves
    it least. `samples_s` holds every process's samples, in process order.
    The interval is the hull of the pooled samples' 95% interval of the
    median and the range of the process medians, so it is never narrower
    than what the processes disagree by. IQR is of the pooled samples.
    `telemetry["processes"]` keeps each process's median, sample count and
    stop reason, and the spread (max - min) / median. Memory and accuracy are
    the first process's; warnings are merged. `cpu_share` pools every
    process's shares; the cell is contended if any process's was (its
    median may be the one in the middle), `attempts` is the most any took.
    A cell is ok only if every process was; otherwise the first failure is
    returned, with the others noted.
    """
    if not results:
        raise ValueError("no results to merge")
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if r.status != "ok" or r.timing is None]
    if failed:
        first = failed[0]
        note = f"{len(failed)} of {len(results)} processes failed; this is the first failure"
        return replace(first, warnings=tuple(dict.fromkeys((*first.warnings, note))))
    medians = [r.timing.median_s for r in results]
    pooled = [x for r in results for x in r.timing.samples_s]
    pooled_summary = summarize(pooled)
    middle = summarize(medians).median
    first = results[0]
    low = None if pooled_summary.ci_low is None else min(pooled_summary.ci_low, *medians)
    high = None if pooled_summary.ci_high is None else max(pooled_summary.ci_high, *medians)
    timing = replace(first.timing, samples_s=tuple(pooled), median_s=middle, iqr_s=pooled_summary.iqr,
                     ci_low_s=low, ci_high_s=high,
                     stop_reason=",".join(dict.fromkeys(r.timing.stop_reason for r in results)),
                     calls_per_sample=first.timing.calls_per_sample)
    timing = replace(timing, cpu_share=tuple(x for r in results for x in r.timing.cpu_share),
                     contended=any(r.timing.contended for r in results),
                     attempts=max(r.timing.attempts for r in results))
    telemetry = dict(first.telemetry)
    telemetry["processes"] = {
        "count": len(results),
        "medians_s": medians,
        "sample_counts": [r.timing.reps for r in results],
        "calls_per_sample": [r.timing.calls_per_sample for r in results],
        "stop_reasons": [r.timing.stop_reason for r in results],
        "contended": [r.timing.contended for r in results],
        "pids": [r.worker.get("pid") for r in results],
        "spread_rel": relative_spread(medians),
        "median_rule": "median of the per-process medians",
    }
    telemetry["outliers"] = tukey_outliers(pooled).to_dict()
    telemetry["cv"] = coefficient_of_variation(pooled)
    energies = [r.telemetry.get("energy_j_per_call") for r in results]
    if all(e is not None for e in energies):
        telemetry["energy_j_per_call"] = sum(energies) / len(energies)
    warnings = tuple(dict.fromkeys(w for r in results for w in r.warnings))
    flops_per_s = first.flops / middle if first.flops and middle > 0 else None
    peak_fraction = None
    if first.peak_fraction and first.flops_per_s:
        peak_fraction = first.peak_fraction * flops_per_s / first.flops_per_s
    duration = sum(r.duration_s or 0.0 for r in results)
    return replace(first, timing=timing, telemetry=telemetry, warnings=warnings, flops_per_s=flops_per_s,
                   peak_fraction=peak_fraction, duration_s=duration)


def _sync_for(case: Case) -> Callable[[], None]:
    if case.device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _total_flops(case: Case, variant: Variant, *, performed: bool = False) -> int | None:
    """The cell's FLOPs: the forward's `flops` (or `performed_flops`), times 1 + BACKWARD_FLOPS_FACTOR in fwd_bwd.

    None when the variant has no such count (`flops` not implemented, or `performed_flops` None).
    """
    try:
        forward = variant.performed_flops(case) if performed else variant.flops(case)
    except NotImplementedError:
        return None
    if forward is None:
        return None
    return round(forward * (1 + BACKWARD_FLOPS_FACTOR)) if case.mode == "fwd_bwd" else int(forward)


def _arithmetic_intensity(case: Case, variant: Variant) -> float | None:
    """Useful forward FLOPs over the least bytes moved: q, k, v read once and the output written once.

    The forward's intensity in both modes (a backward reads q, k, v, out and
    its gradient and writes three gradients for about 2.5 times the FLOPs,
    so fwd_bwd's intensity is close to it).
    """
    try:
        flops = variant.flops(case)
    except NotImplementedError:
        return None
    return flops / (case.input_bytes + case.output_bytes)


def _traffic(case: Case, median_s: float, calibration: dict | None) -> dict:
    """bytes_moved, the bytes/s that achieves at the median time, and its fraction of the copy bandwidth."""
    moved = case.bytes_moved
    out: dict = {"bytes_moved": moved}
    if median_s and median_s > 0:
        out["bytes_per_s"] = moved / median_s
        bandwidth = bandwidth_for(calibration, case.device)
        if bandwidth:
            out["bandwidth_fraction"] = out["bytes_per_s"] / bandwidth
    return out


def _roofline(intensity: float | None, peak: float | None, calibration: dict | None,
              flops_per_s: float | None, device: str) -> dict:
    """The roofline's bound for this intensity, min(peak, intensity × copy bandwidth), and the fraction reached."""
    bandwidth = bandwidth_for(calibration, device)
    if not intensity or not peak or not bandwidth:
        return {}
    bound = min(peak, intensity * bandwidth)
    out = {"roofline_flops_per_s": bound, "roofline_bound": "compute" if bound >= peak else "memory"}
    if flops_per_s:
        out["roofline_fraction"] = flops_per_s / bound
    return out


def _measure_memory(case: Case, variant: Variant, step: _Step) -> Memory:
    """CUDA: the caching allocator's peak. CPU: the allocator's peak (reproducible), and the resident one."""
    predicted = variant.memory_model(case)
    if case.device == "cuda":
        fwd = cuda_peak_bytes(step.forward_only)
        fwd_bwd = cuda_peak_bytes(step) if case.mode == "fwd_bwd" else None
        return Memory(peak_bytes_fwd=fwd.peak_bytes, peak_bytes_fwd_bwd=fwd_bwd.peak_bytes if fwd_bwd else None,
                      method=fwd.method, input_bytes=case.input_bytes, predicted_bytes=predicted)
    fwd = cpu_allocated_peak_bytes(step.forward_only)
    fwd_bwd = cpu_allocated_peak_bytes(step) if case.mode == "fwd_bwd" else None
    resident = cpu_peak_bytes(step.forward_only)
    resident_bwd = cpu_peak_bytes(step) if case.mode == "fwd_bwd" else None
    return Memory(peak_bytes_fwd=fwd.peak_bytes, peak_bytes_fwd_bwd=fwd_bwd.peak_bytes if fwd_bwd else None,
                  method=fwd.method, input_bytes=case.input_bytes, predicted_bytes=predicted,
                  resident_bytes_fwd=resident.peak_bytes,
                  resident_bytes_fwd_bwd=resident_bwd.peak_bytes if resident_bwd else None,
                  resident_method=resident.method)


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
    if out.shape == again.shape:
        same = torch.isclose(out, again, rtol=0.0, atol=0.0, equal_nan=True)      # NaN where NaN is not a difference
        if not bool(same.all()):
            differ = (out.detach().double() - again.detach().double()).abs()[~same]
            spread = float(differ.nan_to_num(nan=float("inf")).max())
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

    approx = fidelity = None
    fidelity_note = ""
    if variant.approximation(case) == "softmax_attention":
        q, k, v = (t.detach() for t in inputs64.tensors())
        exact = softmax_attention(q, k, v, causal=case.causal, rows=rows, mask_mod=case_mask_mod(case),
                                  score_mod=case_score_mod(case))
        approx = error_metrics(out_rows, exact)
        fidelity, fidelity_note = _measure_fidelity(case, variant, inputs64, rows, warnings)
    note = "" if rows is None else f"reference evaluated on {len(rows)} seeded query rows"
    note = "; ".join(filter(None, (note, fidelity_note)))
    if case.mode == "fwd_bwd" and rows is not None:
        note += "; gradients not checked at this size"
    # Judged against the variant's own function (an approximation's `approx` error is reported, never judged).
    bound = variant.tolerance(case)
    ok, tolerance, failures = judge(output_metrics, gradients, bound, dtype=case.dtype, variant=variant.name)
    if bound is None:
        note = "; ".join(filter(None, (note, f"{variant.name} declares no {case.dtype} tolerance: not judged")))
    accuracy = Accuracy(output=output_metrics, gradients=gradients, approx=approx, fidelity=fidelity,
                        rows_checked=None if rows is None else len(rows), note=note,
                        ok=ok, tolerance=tolerance, failures=failures)
    return accuracy, warnings


def _measure_fidelity(case: Case, variant: Variant, inputs64: AttentionInputs, rows: torch.Tensor | None,
                      warnings: list[str]) -> tuple[dict | None, str]:
    """The weights' fidelity to exact softmax (`attnbench.measure.fidelity`) on the accuracy check's rows.

    (fidelity or None, a note). None when the variant gives no weights; a failure is a warning,
    never a failed cell. A variant whose `attention_weights` takes no ``rows=`` is only asked at
    sizes where every row is checked (it would form the whole (N, M) matrix).
    """
    try:
        if rows is not None and not takes_rows(variant):
            return None, f"weight fidelity not computed: {variant.name}'s attention_weights takes no rows="
        detached = AttentionInputs(*(t.detach() for t in inputs64.tensors()))
        return measure_fidelity(case, variant, detached, fidelity_rows(case.seq_len, rows)), ""
    except Exception as exc:
        warnings.append(f"weight fidelity not computed: {describe_exception(exc)}")
        return None, ""


def fwd_only_case(case: Case) -> Case:
    return replace(case, mode="fwd")

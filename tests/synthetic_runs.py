"""Synthetic runs with known numbers, for the report's tests, its benchmark and demos.

`write_synthetic_run` writes a real run folder through `RunWriter` whose cells
follow exact laws: sdpa-flash takes c·N² seconds and N bytes per token, naive
1.5·c·N² seconds and N² bytes (and runs out of memory at the longest length),
Performer c·N·features seconds with an error ∝ 1/√features. Raw samples are
the law times seeded noise whose median is the law itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from attnbench.core.case import Case
from attnbench.core.result import Accuracy, ErrorMetrics, Memory, Result, Run, Timing
from attnbench.store import Cell, RunWriter, new_run_id, now_iso

HOSTILE_VARIANT = "<script>alert(1)</script>"
HOSTILE_KNOB = '<img src=x onerror="window.__pwned=1">'
TIME_CONSTANT = 1e-9          # seconds per N² for sdpa-flash
CALIBRATION = {"matmul_flops_per_s": {"float32": 1.2e11, "bfloat16": 2.0e11}, "copy_bytes_per_s": 1.0e10,
               "device": "cpu"}


@dataclass(frozen=True)
class SyntheticVariant:
    name: str
    family: str
    computes: str
    time_factor: float
    time_power: int                 # time = TIME_CONSTANT · time_factor · N^power (· features/64 when knobbed)
    memory_power: int
    approximates: str | None = None
    params: tuple[dict[str, Any], ...] = ({},)
    oom_from: int | None = None
    unsupported: str = ""


DEFAULT_VARIANTS = (
    SyntheticVariant("sdpa-flash", "flash", "softmax_attention", 1.0, 2, 1),
    SyntheticVariant("naive", "naive", "softmax_attention", 1.5, 2, 2, oom_from=4096),
    SyntheticVariant("performer", "performer", "favor_attention", 300.0, 1, 1, approximates="softmax_attention",
                     params=({"features": 64}, {"features": 256})),
    SyntheticVariant("sdpa-cudnn", "flash", "softmax_attention", 1.0, 2, 1,
                     unsupported="runs on cuda only, not on cpu"),
)
HOSTILE = SyntheticVariant(HOSTILE_VARIANT, "<b>family</b>", "softmax_attention", 2.0, 2, 1,
                           params=({"mode": HOSTILE_KNOB}, {"mode": "plain"}))


@dataclass(frozen=True)
class SyntheticSpec:
    name: str = "synthetic"
    seq_lens: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    variants: tuple[SyntheticVariant, ...] = DEFAULT_VARIANTS
    dtypes: tuple[str, ...] = ("float32",)
    causal: tuple[bool, ...] = (False,)
    modes: tuple[str, ...] = ("fwd",)
    head_dim: int = 64
    heads: int = 8
    samples: int = 31
    noise: float = 0.01
    processes: int = 1                          # K > 1: stored as `run --processes K` stores them
    process_noise: float = 0.01                 # relative spread of the per-process medians
    seed: int = 0
    slowdown: float = 1.0                       # multiplies every time (NEW runs of a regression test)
    slowdown_variants: tuple[str, ...] = ()     # empty: all variants
    memory_scale: float = 1.0                   # multiplies every peak
    error_scale: float = 1.0                    # multiplies every rel_l2_error
    calibrated: bool = True
    environment: dict[str, Any] = field(default_factory=lambda: {
        "torch": "2.4.0", "cpu_model": "Synthetic CPU", "threads": 2, "packages": {"numpy": "2.0"}})
    attention_maps: bool = True
    contended: tuple[tuple[str, int], ...] = ()     # (variant, seq_len) cells timed while descheduled
    inaccurate: tuple[tuple[str, int], ...] = ()    # (variant, seq_len) cells over their tolerance
    setup_s: tuple[tuple[str, float], ...] = ()     # (variant, setup seconds); others 0.01 s


def write_synthetic_run(results_dir: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the run `spec` describes under `results_dir` and return its folder."""
    rng = np.random.default_rng(spec.seed)
    with synthetic_writer(results_dir, spec.name, "synthetic", spec.environment,
                          CALIBRATION if spec.calibrated else {}) as writer:
        for dtype in spec.dtypes:
            for causal in spec.causal:
                for mode in spec.modes:
                    for variant in spec.variants:
                        for params in variant.params:
                            for seq_len in spec.seq_lens:
                                writer.append(_cell(spec, variant, params, dtype, causal, mode, seq_len, rng))
        if spec.attention_maps:
            (writer.path / "attention_maps.json").write_text(json.dumps(_maps(spec.seed)), encoding="utf-8")
    return writer.path


@contextmanager
def synthetic_writer(results_dir, name: str, suite_name: str, environment: dict[str, Any],
                     calibration: dict[str, Any]) -> Iterator[RunWriter]:
    """A writer of a new synthetic run `name` in `results_dir`, closed as finished when the block ends."""
    suite_text = f"# {suite_name.replace('-', ' ')} suite\n[suite]\nname = \"{name}\"\n"
    run = Run(run_id=new_run_id(name), name=name, suite_name=suite_name, suite_text=suite_text,
              started_at=now_iso(), environment=environment, calibration=calibration, harness_version="synthetic")
    writer = RunWriter.create(Path(results_dir), run)
    try:
        yield writer
    finally:
        writer.close("finished")


def _cell(spec: SyntheticSpec, variant: SyntheticVariant, params: dict[str, Any], dtype: str, causal: bool,
          mode: str, seq_len: int, rng: np.random.Generator) -> Cell:
    case = Case(variant=variant.name, seq_len=seq_len, heads=spec.heads, head_dim=spec.head_dim, dtype=dtype,
                causal=causal, mode=mode, seed=0, params=params)
    meta = {"family": variant.family, "computes": variant.computes, "approximates": variant.approximates}
    if variant.unsupported:
        result = Result(status="unsupported", reason=variant.unsupported)
    elif variant.oom_from is not None and seq_len >= variant.oom_from:
        result = Result(status="oom", reason=f"needs {seq_len * seq_len * 8 / 2**30:.1f} GiB for the scores; "
                                             "skipped longer lengths")
    else:
        result = _measured(spec, variant, params, case, seq_len, rng)
    return Cell(case_id=case.id, case=case.to_dict(), result=result, meta=meta, recorded_at=now_iso())


def synthetic_time(variant: SyntheticVariant, params: dict[str, Any], seq_len: int) -> float:
    """The law a synthetic variant's median follows."""
    features = params.get("features")
    scale = features / 64 if isinstance(features, int | float) else 1.0
    return TIME_CONSTANT * variant.time_factor * scale * seq_len ** variant.time_power


def _timing(median: float, noise: float, count: int, rng: np.random.Generator, ci_rank: int,
            setup_s: float) -> Timing:
    """`count` samples with relative noise `noise` whose median is exactly `median`; the CI is ±`ci_rank` ranks."""
    draws = rng.normal(0.0, noise, count)
    samples = tuple(float(median * (1 + e)) for e in draws - np.median(draws))
    ordered = sorted(samples)
    q1, q3 = np.percentile(ordered, [25, 75])
    middle = len(ordered) // 2
    return Timing(samples_s=samples, median_s=median, iqr_s=float(q3 - q1), ci_low_s=ordered[middle - ci_rank],
                  ci_high_s=ordered[middle + ci_rank], calls_per_sample=1, warmup_s=0.05, warmup_calls=3,
                  setup_s=setup_s, stop_reason="ci", timer="perf_counter_ns", threads=2)


def _measured(spec: SyntheticSpec, variant: SyntheticVariant, params: dict[str, Any], case: Case, seq_len: int,
              rng: np.random.Generator) -> Result:
    median = synthetic_time(variant, params, seq_len)
    if not spec.slowdown_variants or variant.name in spec.slowdown_variants:
        median *= spec.slowdown
    timing = _timing(median, spec.noise, spec.samples, rng, 5, dict(spec.setup_s).get(variant.name, 0.01))
    peak = int(4096 * seq_len ** variant.memory_power * spec.memory_scale)
    memory = Memory(peak_bytes_fwd=peak, peak_bytes_fwd_bwd=2 * peak if case.mode == "fwd_bwd" else None,
                    method="synthetic", input_bytes=case.input_bytes)
    features = params.get("features")
    approx = None
    if variant.approximates:
        approx = ErrorMetrics(max_abs_error=0.5 / math.sqrt(features or 64),
                              rel_l2_error=1.0 / math.sqrt(features or 64), nonfinite=0)
    error = 3e-5 * (1 + math.log2(seq_len) / 10) * spec.error_scale
    wrong = (variant.name, seq_len) in spec.inaccurate
    accuracy = Accuracy(output=ErrorMetrics(max_abs_error=error * 4, rel_l2_error=error, nonfinite=0), approx=approx,
                        ok=(not wrong) if spec.inaccurate else None, failures=(f"output rel_l2 {error:.1e} > 1.0e-06 (float32 tolerance of "
                                                f"{variant.name})",) if wrong else ())
    if (variant.name, seq_len) in spec.contended:
        timing = replace(timing, contended=True, attempts=3)
    flops = 4 * case.batch * case.heads * seq_len * seq_len * case.head_dim
    peak_flops = CALIBRATION["matmul_flops_per_s"].get(case.dtype)
    telemetry: dict[str, Any] = {"arithmetic_intensity": flops / (case.input_bytes + peak)}
    if spec.processes > 1:
        offsets = rng.normal(0.0, spec.process_noise, spec.processes)
        medians = sorted(float(median * (1 + e)) for e in offsets - np.median(offsets))
        telemetry["processes"] = {"count": spec.processes, "medians_s": medians,
                                  "spread_rel": (medians[-1] - medians[0]) / median}
    return Result(status="ok", timing=timing, memory=memory, accuracy=accuracy, flops=flops,
                  flops_per_s=flops / median, peak_fraction=(flops / median / peak_flops) if peak_flops else None,
                  telemetry=telemetry)


def _maps(seed: int, seq_len: int = 32) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(seq_len, seq_len))
    exact = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    noisy = np.abs(exact + rng.normal(0, 0.01, exact.shape))
    noisy /= noisy.sum(axis=1, keepdims=True)
    window = np.where(np.abs(np.subtract.outer(np.arange(seq_len), np.arange(seq_len))) <= 4, np.exp(scores), 0)
    window /= window.sum(axis=1, keepdims=True)

    def rounded(matrix: np.ndarray) -> list[list[float]]:
        return [[float(f"{x:.5g}") for x in row] for row in matrix]

    return {"seq_len": seq_len, "kv_len": seq_len, "exact": rounded(exact),
            "variants": {"performer": rounded(noisy), HOSTILE_VARIANT: rounded(window)},
            "errors": {"mamba-scan": "RuntimeError: <no weights> & no matrix"}}


def spec_with(base: SyntheticSpec = SyntheticSpec(), **changes: Any) -> SyntheticSpec:
    from dataclasses import replace

    return replace(base, **changes)


def variants_with_hostile(variants: Sequence[SyntheticVariant] = DEFAULT_VARIANTS) -> tuple[SyntheticVariant, ...]:
    return (*variants, HOSTILE)


@dataclass(frozen=True)
class DecodeVariant:
    """A synthetic decode kernel: its least traffic reaches `bandwidth_fraction` of the copy bandwidth."""

    name: str
    family: str
    bandwidth_fraction: float


DECODE_VARIANTS = (DecodeVariant("sdpa-flash", "flash", 0.5), DecodeVariant("naive", "naive", 0.25))


@dataclass(frozen=True)
class DecodeSpec:
    """Short queries against a long KV cache, causal aligned at the end: every q_len against every kv_len
    (with `self_attention`, kv_len = q_len for each q_len and `kv_lens` is not used)."""

    name: str = "decode"
    q_lens: tuple[int, ...] = (1,)
    kv_lens: tuple[int, ...] = (1024, 2048, 4096, 8192)
    variants: tuple[DecodeVariant, ...] = DECODE_VARIANTS
    batch: int = 1
    kv_cache_bytes: int | None = None          # set: each cell's batch is the one its KV cache holds
    heads: int = 8
    kv_heads: int = 2
    head_dim: int = 64
    v_head_dim: int | None = None
    mask: str = "none"
    score_mod: str = "none"
    dtype: str = "float32"
    self_attention: bool = False
    setup_s: tuple[tuple[str, float], ...] = ()     # (variant, setup seconds); others 0.01 s
    samples: int = 15
    seed: int = 0
    calibrated: bool = True


def write_decode_run(results_dir: Path, spec: DecodeSpec = DecodeSpec()) -> Path:
    """Write the decode run `spec` describes under `results_dir` and return its folder.

    Each cell's median is `decode_time`: its least bytes moved over its variant's share of the
    calibrated copy bandwidth, so the stored bandwidth_fraction is exactly that share.
    """
    rng = np.random.default_rng(spec.seed)
    with synthetic_writer(results_dir, spec.name, "synthetic-decode", {"cpu_model": "Synthetic CPU"},
                          CALIBRATION if spec.calibrated else {}) as writer:
        for variant in spec.variants:
            for q_len in spec.q_lens:
                for kv_len in ((q_len,) if spec.self_attention else spec.kv_lens):
                    writer.append(_decode_cell(spec, variant, decode_case(spec, variant.name, q_len, kv_len), rng))
    return writer.path


def decode_case(spec: DecodeSpec, variant: str, q_len: int, kv_len: int) -> Case:
    value_dim = spec.v_head_dim or spec.head_dim
    batch = spec.batch
    if spec.kv_cache_bytes is not None:
        batch = spec.kv_cache_bytes // (spec.kv_heads * kv_len * (spec.head_dim + value_dim) * _element_bytes(spec))
    extra = {"kv_cache_bytes": spec.kv_cache_bytes} if spec.kv_cache_bytes is not None else {}
    return Case(variant=variant, seq_len=q_len, kv_len=kv_len, batch=batch, heads=spec.heads, kv_heads=spec.kv_heads,
                head_dim=spec.head_dim, v_head_dim=value_dim, mask=spec.mask, score_mod=spec.score_mod,
                dtype=spec.dtype, causal=True, seed=0, **extra)


def decode_bytes_moved(case: Case) -> int:
    """q and k, v read once and the output written once: (B, H, q, d), (B, Hkv, kv, d + dv), (B, H, q, dv)."""
    elements = (case.batch * case.heads * case.seq_len * (case.head_dim + case.v_head_dim)
                + case.batch * case.kv_heads * case.kv_len * (case.head_dim + case.v_head_dim))
    return elements * {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[case.dtype]


def decode_flops(case: Case) -> int:
    return 2 * case.batch * case.heads * case.seq_len * case.kv_len * (case.head_dim + case.v_head_dim)


def decode_time(variant: DecodeVariant, case: Case) -> float:
    return decode_bytes_moved(case) / (variant.bandwidth_fraction * CALIBRATION["copy_bytes_per_s"])


def _element_bytes(spec: DecodeSpec) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[spec.dtype]


def _decode_cell(spec: DecodeSpec, variant: DecodeVariant, case: Case, rng: np.random.Generator) -> Cell:
    median = decode_time(variant, case)
    timing = _timing(median, 0.01, spec.samples, rng, 3, dict(spec.setup_s).get(variant.name, 0.01))
    scores = case.batch * case.heads * case.seq_len * case.kv_len * 4
    memory = Memory(peak_bytes_fwd=scores, peak_bytes_fwd_bwd=None, method="synthetic", input_bytes=case.input_bytes)
    accuracy = Accuracy(output=ErrorMetrics(max_abs_error=1e-6, rel_l2_error=2e-7, nonfinite=0))
    flops, moved = decode_flops(case), decode_bytes_moved(case)
    telemetry: dict[str, Any] = {"arithmetic_intensity": flops / moved, "bytes_moved": moved,
                                 "bytes_per_s": moved / median}
    if spec.calibrated:
        telemetry["bandwidth_fraction"] = moved / median / CALIBRATION["copy_bytes_per_s"]
    peak_flops = CALIBRATION["matmul_flops_per_s"][case.dtype] if spec.calibrated else None
    result = Result(status="ok", timing=timing, memory=memory, accuracy=accuracy, flops=flops,
                    flops_per_s=flops / median, peak_fraction=flops / median / peak_flops if peak_flops else None,
                    telemetry=telemetry)
    meta = {"family": variant.family, "computes": "softmax_attention", "approximates": None}
    return Cell(case_id=case.id, case=case.to_dict(), result=result, meta=meta, recorded_at=now_iso())


QUALITY_TASK = "mqar:kv_pairs=4,steps=100,test_examples=64"
RECALL_SPREAD = 0.05          # seed s of 3 recalls law + (s - 1) · RECALL_SPREAD: min, mean, max are exact
HOSTILE_REASON = "needs <b>cuda</b> & a <script>alert(2)</script> kernel"


@dataclass(frozen=True)
class QualityVariant:
    """A synthetic sequence mixer: recall `recall` at every seq_len (with `features`, `recall` per feature
    count), kernel time per call time_s · (N/64)^time_power (· features/16), state `state` elements
    (softmax: its KV cache, kv_heads·N·2·head_dim)."""

    name: str
    family: str
    computes: str
    recall: float | dict[int, float]
    time_s: float
    time_power: int
    state: str                      # "kv", "features", "square" (heads·head_dim²) or "none"
    params: tuple[dict[str, Any], ...] = ({},)
    unsupported: str = ""
    crashed_seed: int | None = None


QUALITY_VARIANTS = (
    QualityVariant("sdpa-math", "flash", "softmax_attention", 0.95, 4e-3, 2, "kv"),
    QualityVariant("performer", "performer", "favor_attention", {16: 0.3, 64: 0.6}, 7.5e-4, 1, "features",
                   params=({"features": 16}, {"features": 64}), crashed_seed=2),
    QualityVariant("linear", "linear", "linear_attention", 0.4, 5e-4, 1, "square"),
    QualityVariant(HOSTILE_VARIANT, "<b>family</b>", "softmax_attention", 0.5, 1e-3, 1, "none",
                   unsupported=HOSTILE_REASON),
)


@dataclass(frozen=True)
class QualitySpec:
    """A run of quality cells (every variant, knob, seq_len and seed) and the kernel cell of each shape."""

    name: str = "quality"
    seq_lens: tuple[int, ...] = (32, 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[QualityVariant, ...] = QUALITY_VARIANTS
    task: str = QUALITY_TASK
    batch: int = 8
    heads: int = 2
    head_dim: int = 16
    kernels: bool = True
    timing: SyntheticSpec = SyntheticSpec(samples=15)


def write_quality_run(results_dir: Path, spec: QualitySpec = QualitySpec()) -> Path:
    """Write the quality run `spec` describes (the laws of `QualityVariant`) and return its folder."""
    rng = np.random.default_rng(0)
    with synthetic_writer(results_dir, spec.name, "synthetic-quality", {"cpu_model": "Synthetic CPU"},
                          CALIBRATION) as writer:
        for variant in spec.variants:
            for params in variant.params:
                for seq_len in spec.seq_lens:
                    for seed in spec.seeds:
                        writer.append(_quality_cell(spec, variant, params, seq_len, seed))
                    if spec.kernels:
                        writer.append(_kernel_cell(spec, variant, params, seq_len, rng))
    return writer.path


def quality_case(spec: QualitySpec, variant: str, params: dict[str, Any], seq_len: int, seed: int,
                 task: str | None = None) -> Case:
    return Case(variant=variant, seq_len=seq_len, batch=spec.batch, heads=spec.heads, head_dim=spec.head_dim,
                causal=True, mode="fwd_bwd", seed=seed, params=params, task=spec.task if task is None else task)


def quality_recall(variant: QualityVariant, params: dict[str, Any], seed: int = 1) -> float:
    law = variant.recall[params["features"]] if isinstance(variant.recall, dict) else variant.recall
    return law + (seed - 1) * RECALL_SPREAD


def quality_time(variant: QualityVariant, params: dict[str, Any], seq_len: int) -> float:
    scale = params.get("features", 16) / 16
    return variant.time_s * scale * (seq_len / 64) ** variant.time_power


def quality_state(spec: QualitySpec, variant: QualityVariant, params: dict[str, Any], seq_len: int) -> int | None:
    return {"kv": spec.heads * seq_len * 2 * spec.head_dim, "features": spec.heads * params.get("features", 0)
            * spec.head_dim, "square": spec.heads * spec.head_dim ** 2, "none": None}[variant.state]


def _meta(variant: QualityVariant) -> dict[str, Any]:
    return {"family": variant.family, "computes": variant.computes, "approximates": None}


def _quality_cell(spec: QualitySpec, variant: QualityVariant, params: dict[str, Any], seq_len: int,
                  seed: int) -> Cell:
    from attnbench.core.result import TaskOutcome

    case = quality_case(spec, variant.name, params, seq_len, seed)
    if variant.unsupported:
        result = Result(status="unsupported", reason=variant.unsupported)
    elif seed == variant.crashed_seed:
        result = Result(status="crashed", reason=f"worker died training seed {seed}")
    else:
        recall = quality_recall(variant, params, seed)
        loss = 1.0 - recall
        outcome = TaskOutcome(task=case.task, accuracy=recall, queries=256, loss_first=3.0, loss_last=loss,
                              loss_min=loss, loss_curve=((50, 2.0), (100, loss)), steps=100, train_s=2.0 + seed,
                              eval_s=0.1, setup_s=0.05, parameters=20_000, examples=800,
                              state_size=quality_state(spec, variant, params, seq_len))
        result = Result(status="ok", task=outcome, duration_s=2.5)
    return Cell(case_id=case.id, case=case.to_dict(), result=result, meta=_meta(variant), recorded_at=now_iso())


def _kernel_cell(spec: QualitySpec, variant: QualityVariant, params: dict[str, Any], seq_len: int,
                 rng: np.random.Generator) -> Cell:
    case = quality_case(spec, variant.name, params, seq_len, 0, task="none")
    if variant.unsupported:
        return Cell(case_id=case.id, case=case.to_dict(), result=Result(status="unsupported", reason=variant.unsupported),
                    meta=_meta(variant), recorded_at=now_iso())
    timing_variant = SyntheticVariant(variant.name, variant.family, variant.computes, 1.0, 2, 1)
    result = _measured(spec.timing, timing_variant, params, case, seq_len, rng)
    median = quality_time(variant, params, seq_len)
    samples = tuple(median * s / result.timing.median_s for s in result.timing.samples_s)
    timing = replace(result.timing, samples_s=samples, median_s=median, ci_low_s=min(samples), ci_high_s=max(samples))
    result = replace(result, timing=timing, flops_per_s=result.flops / median, peak_fraction=None)
    return Cell(case_id=case.id, case=case.to_dict(), result=result, meta=_meta(variant), recorded_at=now_iso())

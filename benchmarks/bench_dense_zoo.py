"""Time and CPU peak memory of the dense zoo's targets, measured in one run.

    .venv/bin/python benchmarks/bench_dense_zoo.py [--reps R] [--time-seq-len N] [--memory-seq-len N]
                                                   [--additive-seq-len N]

Cases are B=1, H=8, head_dim=64, float32, forward, under torch.inference_mode,
with default knobs unless stated. It prints:

1. flash-tiled against sdpa-flash, time at `--time-seq-len` (4096): after
   prepare and one warm-up call each, `--reps` calls alternating between the
   two (so drift on a shared machine hits both alike), median of each, and
   their ratio (target: flash-tiled within 3x).
2. flash-tiled against naive, peak memory at `--memory-seq-len` (8192): the
   resident bytes one call adds above what was resident before it
   (attnbench.memory.cpu_peak_bytes, after one warm-up call), and their ratio
   (target: flash-tiled at most 1/8 of naive).
3. additive and luong-concat (attn_dim 64, auto chunk) at `--additive-seq-len`
   (4096): peak bytes of one call (target: under 2 GiB) and its time, next to
   memory_model. A call takes tens of seconds here, so the warm-up is one call
   of the same variant at seq_len 512 rather than a second full-size call.

The machine may be shared: times are noisy, which is why the timed pair is
interleaved and medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs
from attnbench.measure.memory import cpu_peak_bytes

GIB = 1 << 30
SHAPE = dict(batch=1, heads=8, head_dim=64, dtype="float32", mode="fwd")


def make_case(name: str, seq_len: int, **params) -> Case:
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=seq_len, params={**variant.params, **params}, **SHAPE)
    reasons = variant.unsupported_reasons(case)
    if reasons:
        raise SystemExit(f"{case.label} cannot run: {'; '.join(reasons)}")
    return case


def prepared(case: Case):
    return default_registry().get(case.variant).prepare(case, make_inputs(case))


def timed_call(forward) -> float:
    start = time.perf_counter_ns()
    forward()
    return (time.perf_counter_ns() - start) / 1e9


def compare_time(seq_len: int, reps: int) -> None:
    names = ("flash-tiled", "sdpa-flash")
    forwards = {name: prepared(make_case(name, seq_len)) for name in names}
    samples = {name: [] for name in names}
    for forward in forwards.values():
        forward()                                                       # warm-up
    for _ in range(reps):
        for name in names:
            samples[name].append(timed_call(forwards[name]))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["flash-tiled"] / medians["sdpa-flash"]
    print(f"time at seq_len {seq_len} (median of {reps}, interleaved):")
    for name in names:
        spread = f"min {min(samples[name]):.3f} s, max {max(samples[name]):.3f} s"
        print(f"  {name:<12} {medians[name]:8.3f} s   ({spread})")
    print(f"  flash-tiled / sdpa-flash = {ratio:.2f}x   (target <= 3x: {'met' if ratio <= 3 else 'MISSED'})")


def peak(case: Case, warmup_case: Case | None = None) -> tuple[int, float]:
    forward = prepared(case)
    if warmup_case is None:
        forward()
    else:
        prepared(warmup_case)()
    start = time.perf_counter()
    measured = cpu_peak_bytes(forward)
    return measured.peak_bytes, time.perf_counter() - start


def compare_memory(seq_len: int) -> None:
    registry = default_registry()
    print(f"peak memory of one call at seq_len {seq_len} (above the inputs):")
    peaks = {}
    for name in ("flash-tiled", "naive"):
        case = make_case(name, seq_len)
        peaks[name], _ = peak(case)
        model = registry.get(name).memory_model(case)
        print(f"  {name:<12} {peaks[name] / 2**20:10.1f} MiB   (memory_model {model / 2**20:.1f} MiB)")
    ratio = peaks["flash-tiled"] / peaks["naive"]
    print(f"  flash-tiled / naive = {ratio:.4f} (1/{1 / ratio:.0f})   (target <= 1/8: {'met' if ratio <= 1 / 8 else 'MISSED'})")


def additive_family(seq_len: int) -> None:
    registry = default_registry()
    print(f"additive family at seq_len {seq_len}, attn_dim 64, auto chunk (one call each):")
    for name in ("additive", "luong-concat"):
        case = make_case(name, seq_len, attn_dim=64)
        bytes_, seconds = peak(case, warmup_case=make_case(name, 512, attn_dim=64))
        model = registry.get(name).memory_model(case)
        verdict = "met" if bytes_ < 2 * GIB else "MISSED"
        print(f"  {name:<12} {bytes_ / 2**20:10.1f} MiB   (memory_model {model / 2**20:.1f} MiB; "
              f"call {seconds:.1f} s; target < 2 GiB: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--time-seq-len", type=int, default=4096)
    parser.add_argument("--memory-seq-len", type=int, default=8192)
    parser.add_argument("--additive-seq-len", type=int, default=4096)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 float32 fwd")
    with torch.inference_mode():
        compare_time(args.time_seq_len, args.reps)
        compare_memory(args.memory_seq_len)
        additive_family(args.additive_seq_len)


if __name__ == "__main__":
    main()

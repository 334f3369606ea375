"""Time and CPU peak memory of the sub-quadratic variants against sdpa-flash, in one process.

    .venv/bin/python benchmarks/bench_subquadratic.py [--seq-len N ...] [--reps R] [--variant NAME ...]

Cases are B=1, H=8, head_dim=64, float32, forward, under torch.inference_mode,
with each variant's default knobs. Each cell: prepare (compile) and one warm-up
call outside the timing, then the median of `--reps` timed calls
(perf_counter_ns), then the peak resident bytes of one more call above what
was resident before it (attnbench.memory.cpu_peak_bytes). It prints the table,
the fitted log-log slopes of time and memory over seq_len, the speed-ups over
sdpa-flash at the longest length, and mamba-scan against the plain sequential
recurrence of the same layer in the same dtype at 4096.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import median_seconds

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs
from attnbench.measure.memory import cpu_peak_bytes
from attnbench.variants.mamba import MambaScan, selective_inputs, selective_scan_sequential

VARIANTS = ("longformer", "performer", "linear", "mamba-scan", "mamba2-ssd", "sdpa-flash")
SEQ_LENS = (2048, 4096, 8192, 16384)
TIME_SLOPE_LIMIT = {"longformer": 1.2, "performer": 1.2, "linear": 1.2, "mamba-scan": 1.2, "mamba2-ssd": 1.2}
MEMORY_SLOPE_LIMIT = {"longformer": 1.15, "performer": 1.15, "linear": 1.15, "mamba-scan": 1.15}
SPEEDUP_OVER_FLASH = {"longformer": 4.0, "performer": 5.0, "mamba2-ssd": 20.0}


def measure(name: str, seq_len: int, reps: int) -> tuple[float, int, float]:
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=seq_len, batch=1, heads=8, head_dim=64, dtype="float32",
                params=dict(variant.params))
    reasons = variant.unsupported_reasons(case)
    if reasons:
        raise SystemExit(f"{case.label} cannot run: {'; '.join(reasons)}")
    with torch.inference_mode():
        inputs = make_inputs(case)
        start = time.perf_counter()
        forward = variant.prepare(case, inputs)
        forward()
        setup = time.perf_counter() - start
        seconds = median_seconds(forward, reps)
        peak = cpu_peak_bytes(forward).peak_bytes
    return seconds, peak, setup


def slope(lengths, values) -> float:
    """Least-squares slope of log(value) over log(seq_len)."""
    xs = [math.log(n) for n in lengths]
    ys = [math.log(max(v, 1e-12)) for v in values]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
            / sum((x - mean_x) ** 2 for x in xs))


def sequential_recurrence_seconds(seq_len: int, reps: int) -> tuple[float, float]:
    """mamba-scan's layer with the plain step-by-step recurrence, against the variant itself, float32."""
    variant = MambaScan()
    case = Case(variant=variant.name, seq_len=seq_len, batch=1, heads=8, head_dim=64, params=dict(variant.params))
    with torch.inference_mode():
        q, k, v = make_inputs(case).tensors()

        def sequential():
            return selective_scan_sequential(*selective_inputs(case, q, k, v, variant.params["state_dim"], q.dtype))

        sequential()
        plain = median_seconds(sequential, reps)
        chunked = variant.prepare(case, make_inputs(case))
        chunked()
        fast = median_seconds(chunked, reps)
    return plain, fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="sequence lengths (default 2048 4096 8192 16384)")
    parser.add_argument("--variant", action="append", help=f"variants (default {' '.join(VARIANTS)})")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per cell (median reported)")
    args = parser.parse_args()
    lengths = sorted(args.seq_len or SEQ_LENS)
    names = args.variant or list(VARIANTS)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 float32 fwd, "
          f"median of {args.reps}")
    print(f"{'variant':<12} {'seq_len':>7} {'time_s':>9} {'peak_MiB':>9} {'setup_s':>8}")
    times: dict[str, list[float]] = {}
    peaks: dict[str, list[int]] = {}
    for name in names:
        for seq_len in lengths:
            reps = args.reps if not (name == "sdpa-flash" and seq_len >= 8192) else min(args.reps, 3)
            seconds, peak, setup = measure(name, seq_len, reps)
            times.setdefault(name, []).append(seconds)
            peaks.setdefault(name, []).append(peak)
            print(f"{name:<12} {seq_len:>7} {seconds:>9.4f} {peak / 2**20:>9.1f} {setup:>8.2f}", flush=True)

    if len(lengths) > 1:
        print(f"\nfitted log-log slopes over seq_len {lengths[0]}..{lengths[-1]} (limit in brackets)")
        for name in names:
            time_slope, memory_slope = slope(lengths, times[name]), slope(lengths, peaks[name])
            print(f"  {name:<12} time {time_slope:5.2f} [{TIME_SLOPE_LIMIT.get(name, '-')}]   "
                  f"memory {memory_slope:5.2f} [{MEMORY_SLOPE_LIMIT.get(name, '-')}]")
    if "sdpa-flash" in times:
        print(f"\nspeed-up over sdpa-flash at seq_len {lengths[-1]} (target in brackets)")
        for name in names:
            if name != "sdpa-flash":
                ratio = times["sdpa-flash"][-1] / times[name][-1]
                print(f"  {name:<12} {ratio:7.1f}x [{SPEEDUP_OVER_FLASH.get(name, '-')}]")
    if "mamba-scan" in names:
        plain, fast = sequential_recurrence_seconds(4096, 3)
        print(f"\nmamba-scan at 4096: plain sequential recurrence {plain:.3f} s, chunk-parallel {fast:.3f} s, "
              f"{plain / fast:.1f}x [2.0]")


if __name__ == "__main__":
    main()

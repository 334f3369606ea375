"""The linear recurrences' chunk-parallel forms against their own plain recurrences, in one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_recurrences.py [--reps R] [--variant NAME ...]

For retnet, gla, deltanet and gated-deltanet: B=1, H=8, d=64, float32, causal,
forward under torch.inference_mode, default knobs. At N = 4096 it times the
variant's prepared forward (the chunked form) and the same layer's plain
step-by-step recurrence (`Recurrence.sequential`, float32, the same inputs
and weights) in --reps pairs side by side and prints the median of the pairs'
ratios; at N = 8192 it times the forward again and
prints its useful and performed FLOP/s as fractions of this machine's matmul
peak, measured here by attnbench's calibration (`measure_matmul`). Each time
is the median of --reps calls after one warm-up call. The script runs itself
under the glibc malloc settings of the harness's workers (`as_in_a_worker`),
as a cell would; --chunk N sets every variant's chunk knob.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import as_in_a_worker, median_seconds

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.calibration import measure_matmul
from attnbench.measure.inputs import make_inputs
from attnbench.variants._recurrent import compute_dtype

VARIANTS = ("retnet", "gla", "deltanet", "gated-deltanet")


CHUNK: dict[str, int] = {}


def layer(name: str, seq_len: int):
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=seq_len, batch=1, heads=8, head_dim=64, dtype="float32", causal=True,
                params={**variant.params, **CHUNK})
    reasons = variant.unsupported_reasons(case)
    if reasons:
        raise SystemExit(f"{case.label} cannot run: {'; '.join(reasons)}")
    return variant, case, make_inputs(case)


def chunked_and_sequential(name: str, seq_len: int, reps: int) -> tuple[float, float, float]:
    """Medians of the chunked form and of the sequential recurrence, and the median of their ratios taken in
    pairs: each pair times the chunked form (median of 3 calls) right beside one sequential call, so a slow
    moment of the shared machine weighs on both sides of a ratio."""
    variant, case, inputs = layer(name, seq_len)
    q, k, v = inputs.tensors()
    weights = variant.mixer_weights(case, inputs, compute_dtype(q.dtype))

    def sequential():
        q_, k_ = variant.prepared_inputs(q, k)
        return variant.sequential(q_, k_, v, weights)[0]

    forward = variant.prepare(case, inputs)
    fast, plain = forward(), sequential()
    error = float((fast - plain).norm() / plain.norm())
    assert error < 1e-5, f"{name}: the chunked form is {error:.2g} (relative L2) off the sequential recurrence"
    forward(), sequential()
    pairs = [(median_seconds(forward, 3), median_seconds(sequential, 1)) for _ in range(reps)]
    chunked, plain = (statistics.median(side) for side in zip(*pairs, strict=True))
    return chunked, plain, statistics.median(s / c for c, s in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help=f"variants (default {' '.join(VARIANTS)})")
    parser.add_argument("--reps", type=int, default=7, help="timed pairs at 4096, timed calls at 8192 (medians)")
    parser.add_argument("--chunk", type=int, help="the chunk knob for every variant (default: each one's own)")
    args = parser.parse_args()
    as_in_a_worker()
    if args.chunk:
        CHUNK["chunk"] = args.chunk
    names = args.variant or list(VARIANTS)
    peak = measure_matmul("float32", "cpu")["flops_per_s"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 float32 causal fwd, "
          f"chunk {args.chunk or 'default'}; the workers' malloc settings; "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (measure_matmul)")
    print(f"{'variant':<15} {'chunked_4096_s':>14} {'sequential_4096_s':>17} {'ratio':>7} "
          f"{'chunked_8192_s':>14} {'useful_peak':>11} {'performed_peak':>14}")
    with torch.inference_mode():
        for name in names:
            chunked, sequential, ratio = chunked_and_sequential(name, 4096, args.reps)
            variant, case, inputs = layer(name, 8192)
            seconds = median_seconds(variant.prepare(case, inputs), args.reps, warmup=True)
            useful = variant.flops(case) / seconds / peak
            performed = (variant.performed_flops(case) or variant.flops(case)) / seconds / peak
            print(f"{name:<15} {chunked:>14.4f} {sequential:>17.4f} {ratio:>6.1f}x "
                  f"{seconds:>14.4f} {useful:>11.1%} {performed:>14.1%}")


if __name__ == "__main__":
    main()

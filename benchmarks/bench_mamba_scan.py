"""mamba-scan's fast path against the plain sequential recurrence of the same layer, in one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_mamba_scan.py [--seq-len N ...] [--reps R] [--chunk T]

Cases are B=1, H=8, head_dim=64 (D = 512 channels), state_dim 16, float32,
forward under torch.inference_mode, with mamba-scan's default knobs. Both
sides get the same projections (Δ, x, B, C): the sequential side runs
`selective_scan_sequential`, one time step at a time, and the fast side is
the variant's prepared forward (projections included, so the ratio is if
anything conservative). Each is called once untimed (compile), then the
median of `--reps` calls is printed with the ratio sequential / fast; the
issue's goal is at least 10x at 4096.

A third column times the previous fast path, the compiled time blocks
(`selective_scan_blocks`, scan only, on the same projections), so the
before and after come from one process.

Measured on the shared 2-core machine: see the README ("mamba-scan") and
the note of issue #29 for the figures and the command.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import as_in_a_worker, median_seconds

from attnbench.core.case import Case
from attnbench.measure.inputs import make_inputs
from attnbench.variants._selective_scan import selective_scan_blocks
from attnbench.variants.mamba import MambaScan, selective_inputs, selective_scan_sequential

SEQ_LENS = (1024, 4096, 16384)
GOAL_AT_4096 = 10.0


def compare(seq_len: int, reps: int, chunk: int | None) -> tuple[float, float, float, float, str]:
    """Seconds at `seq_len`: sequential, the variant's forward, its setup, the compiled blocks; and what ran."""
    variant = MambaScan()
    params = {**variant.params, **({"chunk": chunk} if chunk else {})}
    case = Case(variant=variant.name, seq_len=seq_len, batch=1, heads=8, head_dim=64, params=params)
    with torch.inference_mode():
        inputs = make_inputs(case)
        q, k, v = inputs.tensors()
        projections = selective_inputs(case, q, k, v, variant.params["state_dim"], q.dtype)

        def sequential():
            return selective_scan_sequential(*projections)

        sequential()
        plain = median_seconds(sequential, max(1, reps // 2) if seq_len >= 16384 else reps)
        start = time.perf_counter()
        fast_forward = variant.prepare(case, inputs)
        fast_forward()
        setup = time.perf_counter() - start
        fast = median_seconds(fast_forward, reps)
        chunk = params["chunk"]
        selective_scan_blocks(*projections, steps=chunk)                   # compile outside the timing
        blocks = median_seconds(lambda: selective_scan_blocks(*projections, steps=chunk), reps)
    return plain, fast, setup, blocks, variant.execution(case)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="sequence lengths (default 1024 4096 16384)")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per side (median reported)")
    parser.add_argument("--chunk", type=int, help="mamba-scan's chunk knob (default: its default)")
    args = parser.parse_args()
    as_in_a_worker()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 n=16 float32 fwd, "
          f"median of {args.reps}")
    print(f"{'seq_len':>7} {'sequential_s':>12} {'mamba-scan_s':>12} {'ratio':>7} {'setup_s':>8} "
          f"{'blocks_s':>9} {'ratio':>7}  mamba-scan ran")
    for seq_len in sorted(args.seq_len or SEQ_LENS):
        plain, fast, setup, blocks, execution = compare(seq_len, args.reps, args.chunk)
        goal = f"  [goal {GOAL_AT_4096:.0f}x]" if seq_len == 4096 else ""
        print(f"{seq_len:>7} {plain:>12.4f} {fast:>12.4f} {plain / fast:>6.1f}x {setup:>8.2f} "
              f"{blocks:>9.4f} {plain / blocks:>6.1f}x  {execution}{goal}", flush=True)


if __name__ == "__main__":
    main()

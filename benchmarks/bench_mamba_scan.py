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

Measured on the shared 2-core machine (torch 2.13 CPU, 2 threads, issue #29):
this script printed 3.2x at 4096 (sequential 256 ms, mamba-scan 81 ms), and
in one process the plain recurrence took 169-194 ms, the projections alone
11.5 ms and the compiled blocks 35-44 ms (blocks of 16, 32 or 64 alike); a
state-major (B, n, D) block was faster on one thread (49 against 81 ms) but
slower on two (49 against 35 ms). The blocks form exp(Δ_t A) once per
(t, channel, state), 33.5 M at 4096, which is most of their time: 10x
(about 19 ms, projections included) is not reached. Unlocked jobs on the
other core make the two-thread kernels 3-8x slower, so read ratios from a
quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import as_in_a_worker, median_seconds

from attnbench.core.case import Case
from attnbench.measure.inputs import make_inputs
from attnbench.variants.mamba import MambaScan, selective_inputs, selective_scan_sequential

SEQ_LENS = (1024, 4096, 16384)
GOAL_AT_4096 = 10.0


def compare(seq_len: int, reps: int, chunk: int | None) -> tuple[float, float, float]:
    """(sequential seconds, fast seconds, setup seconds of the fast side) at `seq_len`."""
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
    return plain, fast, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="sequence lengths (default 1024 4096 16384)")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per side (median reported)")
    parser.add_argument("--chunk", type=int, help="mamba-scan's chunk knob (default: its default)")
    args = parser.parse_args()
    as_in_a_worker()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 n=16 float32 fwd, "
          f"median of {args.reps}")
    print(f"{'seq_len':>7} {'sequential_s':>12} {'mamba-scan_s':>12} {'ratio':>7} {'setup_s':>8}")
    for seq_len in sorted(args.seq_len or SEQ_LENS):
        plain, fast, setup = compare(seq_len, args.reps, args.chunk)
        goal = f"  [goal {GOAL_AT_4096:.0f}x]" if seq_len == 4096 else ""
        print(f"{seq_len:>7} {plain:>12.4f} {fast:>12.4f} {plain / fast:>6.1f}x {setup:>8.2f}{goal}", flush=True)


if __name__ == "__main__":
    main()

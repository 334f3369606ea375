"""mamba-scan's fast path against the plain sequential recurrence of the same layer, in one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_mamba_scan.py [--seq-len N ...] [--reps R] [--chunk T]

Cases are B=1, H=8, head_dim=64 (D = 512 channels), state_dim 16, float32,
forward under torch.inference_mode, with mamba-scan's default knobs. Both
sides get the same projections (Δ, x, B, C): the sequential side runs
`selective_scan_sequential`, one time step at a time, and the fast side is
the variant's prepared forward (projections included, so the ratio is if
anything conservative). Each is called once untimed (compile, build), then
`--reps` pairs are timed side by side (one sequential call beside the
median of 3 fast calls), and the medians and the median of the pairs'
ratios sequential / fast are printed, so a slow moment of the machine
lands on both sides of a pair; the issue's goal is at least 10x at 4096.

Two more sides, each on the same projections as the sequential one: the C
scan alone (`c_scan_s`, `selective_scan_native` with D = 1: the like-for-like
comparison of the two scans, the skip and the (B, H, N, d) layout included),
and the previous fast path, the compiled time blocks (`blocks_s`,
`selective_scan_blocks`), so the before and after come from one process.

Measured on the shared 2-core machine: see the README ("mamba-scan") and
the note of issue #29 for the figures and the command.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import as_in_a_worker, median_seconds

from attnbench.core.case import Case
from attnbench.measure.inputs import make_inputs
from attnbench.variants._selective_scan import selective_scan_blocks, selective_scan_native
from attnbench.variants.mamba import MambaScan, selective_inputs, selective_scan_sequential

SEQ_LENS = (1024, 4096, 16384)
GOAL_AT_4096 = 10.0


def compare(seq_len: int, reps: int, chunk: int | None) -> dict:
    """At `seq_len`: seconds of the sequential recurrence, the variant's forward, its setup and the compiled
    blocks, the ratios (medians over side-by-side pairs), and what the variant ran."""
    variant = MambaScan()
    params = {**variant.params, **({"chunk": chunk} if chunk else {})}
    case = Case(variant=variant.name, seq_len=seq_len, batch=1, heads=8, head_dim=64, params=params)
    with torch.inference_mode():
        inputs = make_inputs(case)
        q, k, v = inputs.tensors()
        projections = selective_inputs(case, q, k, v, variant.params["state_dim"], q.dtype)

        def sequential():
            return selective_scan_sequential(*projections)

        def blocks():
            return selective_scan_blocks(*projections, steps=params["chunk"])

        skip = torch.ones(v.shape[1] * v.shape[3])
        delta, _, b, c, a = projections

        def scan():
            return selective_scan_native(delta, v, b, c, a, skip)

        sequential()
        blocks()                                                          # compile outside the timing
        start = time.perf_counter()
        fast_forward = variant.prepare(case, inputs)
        fast_forward()
        setup = time.perf_counter() - start
        pairs = max(1, reps // 2) if seq_len >= 16384 else reps
        # each pair: the fast side and the blocks (median of 3 calls each) right beside one sequential call
        samples = [(median_seconds(sequential, 1), median_seconds(fast_forward, 3), median_seconds(blocks, 3),
                    median_seconds(scan, 3)) for _ in range(pairs)]
    plain, fast, blocked, scanned = (statistics.median(side) for side in zip(*samples, strict=True))
    return {"sequential": plain, "fast": fast, "setup": setup, "blocks": blocked, "scan": scanned,
            "ratio": statistics.median(s / f for s, f, _, _ in samples),
            "blocks_ratio": statistics.median(s / b for s, _, b, _ in samples),
            "scan_ratio": statistics.median(s / c for s, _, _, c in samples), "execution": variant.execution(case)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="sequence lengths (default 1024 4096 16384)")
    parser.add_argument("--reps", type=int, default=7, help="timed pairs (half at 16384); medians reported")
    parser.add_argument("--chunk", type=int, help="mamba-scan's chunk knob (default: its default)")
    args = parser.parse_args()
    as_in_a_worker()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 n=16 float32 fwd, "
          f"median of {args.reps}")
    print(f"{'seq_len':>7} {'sequential_s':>12} {'mamba-scan_s':>12} {'ratio':>7} {'setup_s':>8} "
          f"{'c_scan_s':>9} {'ratio':>7} {'blocks_s':>9} {'ratio':>7}  mamba-scan ran")
    for seq_len in sorted(args.seq_len or SEQ_LENS):
        r = compare(seq_len, args.reps, args.chunk)
        goal = f"  [goal {GOAL_AT_4096:.0f}x]" if seq_len == 4096 else ""
        print(f"{seq_len:>7} {r['sequential']:>12.4f} {r['fast']:>12.4f} {r['ratio']:>6.1f}x {r['setup']:>8.2f} "
              f"{r['scan']:>9.4f} {r['scan_ratio']:>6.1f}x {r['blocks']:>9.4f} {r['blocks_ratio']:>6.1f}x  "
              f"{r['execution']}{goal}", flush=True)


if __name__ == "__main__":
    main()

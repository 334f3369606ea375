"""longformer against one dense SDPA call with the same band as a boolean mask, in one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_longformer_dense.py [--seq-len N ...]
        [--window W ...] [--mode fwd|fwd_bwd] [--reps R]

Cases are B=1, H=8, head_dim=64, float32, no global tokens, causal and not.
Per case it times, alternating call by call so that drift hits all alike:
the `longformer` variant as prepared (it picks its execution per case, shown
in the `ran` column), the overlapping-chunk band alone (`banded`), and
`scaled_dot_product_attention` with the band's (N, N) boolean mask (`dense`).
It prints the medians and dense / longformer (>= 1: longformer is at least as
fast as the dense masked call) and banded / dense, the ratio the choice is made on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from attnbench.attention.masks import mask_matrix
from attnbench.core.case import Case
from attnbench.measure.inputs import make_inputs
from attnbench.variants.longformer import (
    Longformer,
    banded_attention,
    banded_masks,
    longformer_mask_mod,
)

SEQ_LENS = (512, 1024, 2048, 4096, 8192)
WINDOWS = (128, 256)


def alternating_medians(functions: dict, reps: int, grad_of=None) -> dict[str, float]:
    """Median seconds per function, calling them in turn `reps` times (after one untimed round)."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(reps + 1):
        for name, fn in functions.items():
            start = time.perf_counter_ns()
            out = fn()
            if grad_of is not None:
                torch.autograd.grad(out, grad_of, torch.ones_like(out))
            if round_index:
                samples[name].append((time.perf_counter_ns() - start) / 1e9)
    return {name: statistics.median(values) for name, values in samples.items()}


def compare(seq_len: int, window: int, causal: bool, mode: str, reps: int) -> tuple[dict[str, float], str]:
    variant = Longformer()
    case = Case(variant=variant.name, seq_len=seq_len, batch=1, heads=8, head_dim=64, causal=causal, mode=mode,
                params={"window": window, "global_tokens": 0})
    inputs = make_inputs(case, requires_grad=mode == "fwd_bwd")
    q, k, v = inputs.tensors()
    allowed = mask_matrix(longformer_mask_mod(seq_len, window, 0, causal), seq_len, seq_len)   # (N, N)
    masks = banded_masks(seq_len, window, 0, causal)
    functions = {
        "longformer": variant.prepare(case, inputs),
        "banded": lambda: banded_attention(q, k, v, window, 0, causal, masks),
        "dense": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
    }
    if mode == "fwd":
        with torch.inference_mode():
            medians = alternating_medians(functions, reps)
    else:
        medians = alternating_medians(functions, reps, grad_of=[q, k, v])
    return medians, variant.execution(case)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, action="append", help="lengths (default 512 ... 8192)")
    parser.add_argument("--window", type=int, action="append", help="windows (default 128 256)")
    parser.add_argument("--mode", choices=("fwd", "fwd_bwd"), default="fwd")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds (median reported)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B=1 H=8 d=64 float32 {args.mode}, "
          f"median of {args.reps} alternating rounds")
    print(f"{'window':>6} {'causal':>6} {'seq_len':>7} {'ran':>7} {'longformer_s':>12} {'banded_s':>9} "
          f"{'dense_s':>9} {'dense/longformer':>16} {'banded/dense':>12}")
    worst = float("inf")
    for window in args.window or WINDOWS:
        for causal in (False, True):
            for seq_len in sorted(args.seq_len or SEQ_LENS):
                medians, ran = compare(seq_len, window, causal, args.mode, args.reps)
                ratio = medians["dense"] / medians["longformer"]
                worst = min(worst, ratio)
                print(f"{window:>6} {causal!s:>6} {seq_len:>7} {ran:>7} {medians['longformer']:>12.5f} "
                      f"{medians['banded']:>9.5f} {medians['dense']:>9.5f} {ratio:>15.2f}x "
                      f"{medians['banded'] / medians['dense']:>11.2f}x", flush=True)
    print(f"\nworst dense / longformer: {worst:.2f}x (goal >= 1.0)")


if __name__ == "__main__":
    main()

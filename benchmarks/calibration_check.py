"""Is the calibrated matmul peak what a plain torch.mm loop reaches? Prints the ratio; asserts nothing.

Measures a fresh calibration of the CPU (not the cache) for float32, then
times `torch.mm(a, b)` at the same n with `torch.utils.benchmark.Timer`
(`blocked_autorange`, the process's thread count) and prints
calibrated FLOP/s over Timer's FLOP/s (target: within 5%). The two are
interleaved over `--rounds` rounds so that drift in the machine's load hits
both; the median ratio is the figure.

    .venv/bin/python benchmarks/calibration_check.py [--device cpu] [--dtype float32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.utils.benchmark as benchmark

from attnbench.attention.tensors import torch_dtype
from attnbench.measure.calibration import matmul_flops, measure_device


def timer_flops(n: int, dtype: str, device: str, min_run_time: float) -> float:
    a = torch.randn(n, n).to(device=device, dtype=torch_dtype(dtype))
    b = torch.randn(n, n).to(device=device, dtype=torch_dtype(dtype))
    timer = benchmark.Timer(stmt="torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b},
                            num_threads=torch.get_num_threads())
    return matmul_flops(n) / timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{tuple(round(x, 2) for x in os.getloadavg())}")
    ratios = []
    for round_index in range(args.rounds):
        calibration = measure_device(args.device, [args.dtype])
        n = calibration["matmul_size"][args.dtype]
        peak = calibration["matmul_flops_per_s"][args.dtype]
        reference = timer_flops(n, args.dtype, args.device, args.min_run_time)
        ratios.append(peak / reference)
        print(f"round {round_index + 1}: calibration {peak / 1e9:.2f} GFLOP/s at n={n} "
              f"(measured in {calibration['seconds']:.2f} s), Timer torch.mm {reference / 1e9:.2f} GFLOP/s, "
              f"ratio {peak / reference:.4f}; copy {calibration['copy_bytes_per_s'] / 1e9:.2f} GB/s")
    print(f"calibrated/Timer fp32 matmul peak ratio: median {statistics.median(ratios):.4f} "
          f"over {len(ratios)} rounds")


if __name__ == "__main__":
    main()

"""Decode against the memory bandwidth: flash-decoding and sdpa-flash, in one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_decode_bandwidth.py [--kv-len M ...]
        [--splits S ...] [--reps R]

The cases are llm-decode's: one query (seq_len 1, causal, aligned at the end)
against a 256 MiB float32 KV cache of M keys (the batch follows from it),
head_dim 128, grouped heads 32/8 (Llama 3 8B) and multi-query 8/1 (Llama 3
70B over 8 tensor-parallel devices). For each it prints the median seconds
of each variant, `bytes_moved` (q, k, v read once, the output written once),
that per second, and `bandwidth_fraction`: that over the copy bandwidth
measured here as the harness calibrates it (bytes read + written per second
of a large `copy_`). The last lines give the plain read bandwidth of the
same KV cache (`torch.sum` over k and v, which reads every byte once and
writes nothing): the most a decode step can reach.
"""

from __future__ import annotations

import argparse

import torch
from _common import median_seconds

from attnbench.core.case import Case, batch_for_kv_cache
from attnbench.core.registry import default_registry
from attnbench.measure.calibration import measure_copy
from attnbench.measure.inputs import make_inputs

HEADS = {"GQA 32/8": (32, 8), "MQA 8/1": (8, 1)}
KV_CACHE_BYTES = 256 * 2**20


def decode_case(variant: str, heads: int, kv_heads: int, kv_len: int, params: dict) -> Case:
    fields = dict(variant=variant, seq_len=1, kv_len=kv_len, heads=heads, kv_heads=kv_heads, head_dim=128,
                  causal=True, params=params, kv_cache_bytes=KV_CACHE_BYTES)
    batch = batch_for_kv_cache(KV_CACHE_BYTES, Case(**{**fields, "kv_cache_bytes": None}))
    return Case(batch=batch, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-len", type=int, action="append", help="KV lengths (default 8192 32768)")
    parser.add_argument("--splits", type=int, action="append", help="flash-decoding splits (default: its default, 0)")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    registry = default_registry()
    copy = measure_copy("cpu")["copy_bytes_per_s"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32, head_dim 128, seq_len 1, "
          f"256 MiB KV cache; copy bandwidth {copy / 1e9:.2f} GB/s; median of {args.reps}")
    print(f"{'heads':<9} {'kv_len':>6} {'batch':>5} {'variant':<22} {'time_ms':>8} {'GB/s':>6} {'bandwidth_fraction':>18}")
    reads = []
    for label, (heads, kv_heads) in HEADS.items():
        for kv_len in args.kv_len or (8192, 32768):
            sides = [("sdpa-flash", {})] + [("flash-decoding", {"splits": s}) for s in (args.splits or [0])]
            read_case = None
            for name, params in sides:
                variant = registry.get(name)
                case = decode_case(name, heads, kv_heads, kv_len, {**variant.params, **params})
                with torch.inference_mode():
                    inputs = make_inputs(case)
                    seconds = median_seconds(variant.prepare(case, inputs), args.reps, warmup=True)
                shown = name + (f" S={params['splits'] or 'auto'}" if params else "")
                rate = case.bytes_moved / seconds
                print(f"{label:<9} {kv_len:>6} {case.batch:>5} {shown:<22} {seconds * 1e3:>8.3f} {rate / 1e9:>6.2f} "
                      f"{rate / copy:>18.3f}", flush=True)
                read_case = (case, inputs)
            case, inputs = read_case
            _, k, v = inputs.tensors()
            read_s = median_seconds(lambda k=k, v=v: (k.sum(), v.sum()), args.reps, warmup=True)
            reads.append((label, kv_len, (k.nbytes + v.nbytes) / read_s))
    print("\nplain read of the KV cache (torch.sum over k and v):")
    for label, kv_len, rate in reads:
        print(f"  {label:<9} {kv_len:>6}: {rate / 1e9:.2f} GB/s = {rate / copy:.3f} of the copy bandwidth")


if __name__ == "__main__":
    main()

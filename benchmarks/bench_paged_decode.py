"""Paged against contiguous KV caches on a decode step: the time ratio paged/contiguous per variant, one process.

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_paged_decode.py [--kv-len M ...]
        [--page-size P ...] [--variant NAME ...] [--shuffle F] [--rounds R]

The cases are llm-decode's paged cells: one query (seq_len 1, causal, aligned
at the end), float32, head_dim 128, grouped heads 32/8 (Llama 3 8B), a 256 MiB
KV cache of M keys (the batch follows from it: 4 at 8K, 1 at 32K). Each
variant runs its contiguous cell (page_size 0) and a paged cell per page size
(pages shuffled through the seeded block table, `--shuffle` of them out of
order). The sides are timed in alternation, one call each per round in a
rotating order, so drift on a shared machine hits them alike; the ratio is
the median over rounds of paged/contiguous of the same round. Variants that
cannot take a cell here (flash-attn: CUDA) are listed with their reason.
The script runs itself under the glibc malloc settings of the harness's
workers (`as_in_a_worker`), as a cell would.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import as_in_a_worker

from attnbench.core.case import Case, batch_for_kv_cache
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs

KV_CACHE_BYTES = 256 * 2**20
VARIANTS = ("naive", "sdpa-math", "sdpa-flash", "flash-decoding", "flex")


def decode_case(variant: str, kv_len: int, page_size: int, shuffle: float) -> Case:
    fields = dict(variant=variant, seq_len=1, kv_len=kv_len, heads=32, kv_heads=8, head_dim=128, causal=True,
                  page_size=page_size, page_shuffle=shuffle)
    batch = batch_for_kv_cache(KV_CACHE_BYTES, Case(**fields))
    return Case(batch=batch, kv_cache_bytes=KV_CACHE_BYTES, **fields)


def alternate(calls: dict[int, object], rounds: int) -> dict[int, list[float]]:
    """Seconds of each call per round, the calls in a rotating order; one untimed warm-up call each first."""
    for call in calls.values():
        call()
    samples: dict[int, list[float]] = {key: [] for key in calls}
    keys = list(calls)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.perf_counter_ns()
            calls[key]()
            samples[key].append((time.perf_counter_ns() - start) / 1e9)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-len", type=int, action="append", help="KV lengths (default 8192 32768)")
    parser.add_argument("--page-size", type=int, action="append", help="page sizes (default 16 256)")
    parser.add_argument("--variant", action="append", help=f"variants (default {' '.join(VARIANTS)})")
    parser.add_argument("--shuffle", type=float, default=1.0, help="page_shuffle (default 1: every page may move)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    as_in_a_worker()
    registry = default_registry()
    page_sizes = args.page_size or [16, 256]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32, GQA 32/8, head_dim 128, seq_len 1, "
          f"causal, 256 MiB KV cache, page_shuffle {args.shuffle:g}; medians of {args.rounds} alternating rounds")
    header = f"{'kv_len':>6} {'batch':>5} {'variant':<15} {'contiguous_ms':>13}"
    print(header + "".join(f" {f'page{p}_ms':>11} {f'ratio{p}':>8}" for p in page_sizes))
    for kv_len in args.kv_len or [8192, 32768]:
        for name in args.variant or VARIANTS:
            variant = registry.get(name)
            cases = {p: decode_case(name, kv_len, p, args.shuffle) for p in [0, *page_sizes]}
            reasons = {p: variant.unsupported_reasons(c) for p, c in cases.items()}
            if reasons[0]:
                print(f"{kv_len:>6} {cases[0].batch:>5} {name:<15} cannot run here: {'; '.join(reasons[0])}")
                continue
            with torch.inference_mode():
                inputs = make_inputs(cases[0])
                calls = {p: variant.prepare(c, inputs) for p, c in cases.items() if not reasons[p]}
                samples = alternate(calls, args.rounds)
            line = f"{kv_len:>6} {cases[0].batch:>5} {name:<15} {statistics.median(samples[0]) * 1e3:>13.3f}"
            for p in page_sizes:
                if p not in samples:
                    line += f" {'-':>11} {'-':>8}"
                    continue
                ratio = statistics.median(s / c for s, c in zip(samples[p], samples[0], strict=True))
                line += f" {statistics.median(samples[p]) * 1e3:>11.3f} {ratio:>8.2f}"
            print(line, flush=True)
            for p in page_sizes:
                if reasons[p]:
                    print(f"{'':>13} {name} page_size {p}: {'; '.join(reasons[p])}")
            del calls, inputs


if __name__ == "__main__":
    main()

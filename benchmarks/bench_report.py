"""How long `write_report` takes on a synthetic 500-cell run, and how big the page is.

    .venv/bin/python benchmarks/bench_report.py [--repeat 3]

The run (built with RunWriter in a temporary folder) has 8 series (sdpa-flash,
naive, performer at 2 feature counts, the unsupported sdpa-cudnn, a hostile
name at 2 knob settings, linear) × 8 seq_lens × 2 dtypes × 2 causal × 2 modes
= 512 cells in 8 workloads, calibrated, with attention maps. Prints the
seconds per build (best and median, wall; and the CPU seconds, which a
shared machine disturbs less) and the size of the HTML in bytes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from synthetic_runs import (
    DEFAULT_VARIANTS,
    HOSTILE,
    SyntheticVariant,
    spec_with,
    write_synthetic_run,
)

from attnbench.report import write_report
from attnbench.store import load_run

SEQ_LENS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LINEAR = SyntheticVariant("linear", "linear", "linear_attention", 200.0, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="builds to time (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = spec_with(name="bench-500", seq_lens=SEQ_LENS, variants=(*DEFAULT_VARIANTS, HOSTILE, LINEAR),
                         dtypes=("float32", "bfloat16"), causal=(False, True), modes=("fwd", "fwd_bwd"))
        loaded = load_run(write_synthetic_run(root / "results", spec))
        times, cpu_times = [], []
        for _ in range(args.repeat):
            start, cpu_start = time.perf_counter(), time.process_time()
            path = write_report([loaded], root / "report.html")
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        size = path.stat().st_size
    print(f"cells: {len(loaded.cells)}")
    print(f"write_report: best {min(times):.2f} s, median {statistics.median(times):.2f} s wall "
          f"(CPU {min(cpu_times):.2f} s) over {len(times)} builds")
    print(f"report size: {size} bytes ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()

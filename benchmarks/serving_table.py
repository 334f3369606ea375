"""The ragged cells of a stored run: time, padding waste and imbalance per backend (variant and layout).

    .venv/bin/python benchmarks/serving_table.py RUN [--lengths lognormal:96,0.8] [--batch 16] [--results DIR]

RUN is anything `attnbench show` takes (an id, a name, a folder, `latest`).
One line per ok cell that has a `padding_waste` (a ragged batch), with its
preset shape (heads/kv_heads), lengths, backend, how it ran (`execution`),
median time with its 95% interval, padding_waste, imbalance, accuracy_ok and
whether it was contended. The figures behind the README's llm-serving table.
"""

from __future__ import annotations

import argparse

from attnbench.report.ragged import ragged_cells
from attnbench.store import load_run, resolve_run, tidy_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--lengths", action="append", default=None, help="only these lengths (repeatable)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    cells = ragged_cells(tidy_frame([load_run(resolve_run(args.run, args.results))]))
    if args.lengths:
        cells = cells[cells["lengths"].isin(args.lengths)]
    if args.batch is not None:
        cells = cells[cells["batch"] == args.batch]
    print(f"{'heads':>6} {'B':>3} {'lengths':22} {'backend':20} {'time ms':>8} {'95% CI ms':>15} {'waste':>6} "
          f"{'imbal':>6} {'ok':>3} {'cont':>4}  execution")
    for r in cells.sort_values(["heads", "seq_len", "kv_len", "lengths", "time_median_s"]).itertuples(index=False):
        interval = (f"{r.time_ci_low_s * 1e3:.1f}-{r.time_ci_high_s * 1e3:.1f}"
                    if r.time_ci_low_s == r.time_ci_low_s and r.time_ci_low_s is not None else "-")
        print(f"{r.heads:>3}/{r.kv_heads:<2} {r.batch:>3} {r.lengths:22} {r.backend:20} {r.time_median_s * 1e3:>8.2f} "
              f"{interval:>15} {r.padding_waste:>6.2f} {r.imbalance:>6.2f} {'yes' if r.accuracy_ok else 'no':>3} "
              f"{'yes' if r.contended else '':>4}  {r.execution}")


if __name__ == "__main__":
    main()

"""How often does `ab` of a variant against itself give a paired interval containing 1.00?

    flock /tmp/bench.lock .venv/bin/python benchmarks/ab_self_coverage.py [--repeats 10] [--pairs 6]
        [--variant naive] [--seq-len 1024]

Each repeat is one `run_ab` (A and B the same variant, alternating in two
worker processes) on one case; it prints each repeat's paired ratio and
interval, and how many of the intervals contain 1.00. The issue's target is
at least 9 of 10. For contrast it also prints the ratio of two sequential
medians (the first A and the last B of each repeat), which is what two
separate runs compare.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from attnbench.core.registry import default_registry
from attnbench.engine.ab import Side, run_ab
from attnbench.plan.suite import parse_suite

SUITE = """
[suite]
name = "ab-self"
variants = ["{variant}"]
[defaults]
heads = 8
head_dim = 64
device = "cpu"
[sweep]
seq_len = [{seq_len}]
[measure]
warmup_s = 0.05
budget_s = 0.3
memory = false
accuracy = false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--variant", default="naive")
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()
    suite = parse_suite(SUITE.format(variant=args.variant, seq_len=args.seq_len), source="ab_self_coverage")
    registry = default_registry()
    covered = 0
    with tempfile.TemporaryDirectory() as results:
        for repeat in range(args.repeats):
            outcome = run_ab(suite, registry, Side("A", args.variant, args.variant), Side("B", args.variant,
                             args.variant), Path(results), pairs=args.pairs, name=f"self-{repeat}")
            (item,) = outcome.cases
            paired = item.paired
            covered += paired.covers_one
            sequential = item.b_medians[-1] / item.a_medians[0]
            print(f"repeat {repeat + 1:2}: B/A {paired.ratio:.3f} [{paired.low:.3f}, {paired.high:.3f}] "
                  f"{'contains' if paired.covers_one else 'MISSES  '} 1.00; pair ratios "
                  f"{', '.join(f'{r:.3f}' for r in item.ratios)}; sequential first-A/last-B {sequential:.3f}")
    print(f"{covered} of {args.repeats} paired intervals contain 1.00 ({args.variant}, N={args.seq_len}, "
          f"{args.pairs} pairs)")


if __name__ == "__main__":
    main()

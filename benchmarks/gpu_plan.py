"""What benchmarks/gpu_check.sh will run: the suite's cells per variant and the time it should take.

    python benchmarks/gpu_plan.py [SUITE]

The estimate is a model, not a measurement: per cell the warm-up and the timing budget of the
suite's [measure] table plus SETUP_S (worker hand-off, inputs, the accuracy check), and COMPILE_S
more for each cell of a variant that compiles a kernel per shape.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

SETUP_S = 1.5
COMPILE_S = 20.0
COMPILING = ("flex", "longformer-flex", "mamba-scan")


def plan(suite_name: str) -> tuple[Counter, float]:
    """Cells per variant, and the expected seconds the suite takes on an idle GPU."""
    from attnbench.core.registry import default_registry
    from attnbench.plan.suite import expand, load_suite

    suite = load_suite(suite_name)
    cells = Counter(case.variant for case in expand(suite, default_registry()))
    per_cell = suite.measure.warmup_s + suite.measure.budget_s + SETUP_S
    seconds = sum(count * (per_cell + (COMPILE_S if name in COMPILING else 0.0)) for name, count in cells.items())
    return cells, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="gpu-smoke")
    args = parser.parse_args(argv)
    cells, seconds = plan(args.suite)
    print(f"suite {args.suite}: {sum(cells.values())} cells")
    for name, count in sorted(cells.items()):
        print(f"  {name:<18} {count} cells")
    print(f"expected suite time: about {seconds:.0f} s on an idle GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

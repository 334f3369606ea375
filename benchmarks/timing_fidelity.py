"""Does the harness time what torch.utils.benchmark times? Prints ratios; asserts nothing.

For each variant and seq_len (B=1, H=8, d=64, float32, forward, CPU) the
same prepared step on the same inputs, in this one process, is timed by:

1. fidelity: the harness's `time_cpu` (default [measure] settings: warm-up
   0.1 s, budget 1 s, ±2%) against `Timer.blocked_autorange(min_run_time=1)`;
   ratio = harness median / Timer median (target: within ±3%). The two are
   interleaved over `--rounds` rounds so that drift in the machine's load
   hits both; the median ratio and every round's ratio are printed.
2. time to a ±1% answer: the harness with target_rel_ci=0.01 (budget
   `--max-s`) against `Timer.adaptive_autorange(threshold=0.01,
   max_run_time=--max-s)`; wall seconds of each (target: the harness no
   slower). The two stop on different rules: the harness when the 95%
   interval of the median is within ±1%, Timer when IQR/median < 1%; both
   rules' values are printed for both sets of samples.

Timer runs with `num_threads=torch.get_num_threads()` (its default is 1
thread, which would compare different programs).

    .venv/bin/python benchmarks/timing_fidelity.py [--variants naive sdpa-flash] [--seq-lens 1024 4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.utils.benchmark as benchmark

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell.setup import Step
from attnbench.measure.inputs import make_inputs
from attnbench.measure.stats import summarize
from attnbench.measure.timing import time_cpu


def prepared_step(name: str, seq_len: int) -> tuple[Case, Step]:
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=seq_len, batch=1, heads=8, head_dim=64, dtype="float32", mode="fwd")
    torch.manual_seed(case.seed)
    inputs = make_inputs(case)
    step = Step(case, inputs, variant.prepare(case, inputs))
    step()
    return case, step


def timer_for(step: Step) -> benchmark.Timer:
    return benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())


def per_call_samples(measurement) -> list[float]:
    return [t / measurement.number_per_run for t in measurement.raw_times]


def fidelity(step: Step, rounds: int, settings: MeasureSettings) -> list[tuple[float, float]]:
    pairs = []
    for _ in range(rounds):
        harness_median = summarize(time_cpu(step, settings).samples_s).median
        timer_median = timer_for(step).blocked_autorange(min_run_time=settings.budget_s).median
        pairs.append((harness_median, timer_median))
    return pairs


def time_to_one_percent(step: Step, max_s: float) -> dict[str, dict[str, float]]:
    settings = MeasureSettings(target_rel_ci=0.01, budget_s=max_s, warmup_s=0.1)
    started = time.perf_counter()
    timed = time_cpu(step, settings)
    harness_wall = time.perf_counter() - started
    started = time.perf_counter()
    measurement = timer_for(step).adaptive_autorange(threshold=0.01, max_run_time=max_s)
    timer_wall = time.perf_counter() - started
    out = {}
    for label, samples, wall, stop in (("harness", list(timed.samples_s), harness_wall, timed.stop_reason),
                                       ("timer", per_call_samples(measurement), timer_wall,
                                        "iqr" if measurement.iqr / measurement.median < 0.01 else "max_run_time")):
        summary = summarize(samples)
        out[label] = {"wall_s": wall, "samples": len(samples), "median_s": summary.median,
                      "ci_half_width": summary.rel_half_width, "iqr_over_median": summary.iqr / summary.median,
                      "stop": stop}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["sdpa-flash", "naive"])
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved harness/Timer rounds for the ratio")
    parser.add_argument("--max-s", type=float, default=30.0, help="budget of each ±1%% measurement")
    parser.add_argument("--skip-adaptive", action="store_true", help="only the fidelity ratio")
    args = parser.parse_args()
    load = torch.get_num_threads()
    print(f"torch {torch.__version__}, {load} threads, load average {tuple(round(x, 2) for x in _load())}")
    settings = MeasureSettings()
    for name in args.variants:
        for seq_len in args.seq_lens:
            case, step = prepared_step(name, seq_len)
            pairs = fidelity(step, args.rounds, settings)
            ratios = [h / t for h, t in pairs]
            print(f"{case.label}: harness/Timer median ratio {statistics.median(ratios):.4f} "
                  f"(rounds: {', '.join(f'{r:.4f}' for r in ratios)}; harness medians "
                  f"{', '.join(f'{h * 1e3:.2f}' for h, _ in pairs)} ms, Timer medians "
                  f"{', '.join(f'{t * 1e3:.2f}' for _, t in pairs)} ms)")
            if args.skip_adaptive:
                continue
            race = time_to_one_percent(step, args.max_s)
            h, t = race["harness"], race["timer"]
            print(f"  to ±1%: harness {h['wall_s']:.2f} s ({h['samples']} samples, stop {h['stop']}, "
                  f"CI ±{h['ci_half_width']:.2%}, IQR/median {h['iqr_over_median']:.2%}) vs "
                  f"Timer.adaptive_autorange {t['wall_s']:.2f} s ({t['samples']} samples, stop {t['stop']}, "
                  f"CI ±{t['ci_half_width']:.2%}, IQR/median {t['iqr_over_median']:.2%}); "
                  f"wall ratio harness/Timer {h['wall_s'] / t['wall_s']:.2f}")


def _load() -> tuple[float, float, float]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


if __name__ == "__main__":
    main()

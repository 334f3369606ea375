"""`attnbench ab`: two sides measured in alternation, gated on the paired ratio."""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.cli.report import GateType, finish_gates
from attnbench.core.errors import AttnbenchError
from attnbench.core.units import format_seconds
from attnbench.store import default_results_dir

DEFAULT_PAIRS = 6
DEFAULT_MAX_PAIRS = 40


@click.command("ab")
@click.argument("suite")
@click.option("--a", "side_a", default="", metavar="SIDE",
              help="side A (the reference): a variant name, or KEY=VALUE items: variant=, param.KNOB=, "
                   "python= (another environment's interpreter), pythonpath= (another checkout), env.NAME=")
@click.option("--b", "side_b", default="", metavar="SIDE", help="side B (the candidate), as --a")
@click.option("--pairs", type=click.IntRange(min=2), default=DEFAULT_PAIRS, show_default=True,
              help="pairs per case before the first look (A and B alternating); without --fail-on, all of them")
@click.option("--max-pairs", type=click.IntRange(min=2), default=DEFAULT_MAX_PAIRS, show_default=True,
              help="with --fail-on median: keep adding pairs until the interval is wholly above or below "
                   "the gate's limit, at most this many")
@click.option("--variant", "variants", multiple=True, help="only these variants of the suite (repeatable)")
@click.option("--seq-len", "seq_lens", multiple=True, type=int, help="only these lengths (repeatable)")
@click.option("--fail-on", "gates", type=GateType(), multiple=True,
              help="exit 1 if B is slower than A beyond median:PCT, with the paired interval above 1")
@click.option("--threshold", default=0.02, type=float, show_default=True,
              help="smallest ratio change (fraction) that counts as faster or slower")
@click.option("--name", default=None, help="run name (default: ab-SUITE)")
@click.option("--results", default=None, help="results folder (default: ./results or $ATTNBENCH_RESULTS)")
def ab_command(suite, side_a, side_b, pairs, max_pairs, variants, seq_lens, gates, threshold, name,
               results) -> None:
    """Measure SUITE's cases on side A and side B in alternation (A B, B A, ...), each side in its own
    worker, and report the paired ratio B/A per case with its 95% interval.

    Pairs taken back to back cancel the drift that makes two separate runs on a
    shared machine disagree, so this is how a CI should check a kernel change:
    e.g. `attnbench ab quick --a pythonpath=../main --b pythonpath=. --fail-on median:5%`.
    With a median gate each case takes --pairs pairs, then more until its
    interval (valid under these repeated looks) is wholly above the gate's
    limit (fail) or wholly below it (pass), or --max-pairs is reached
    (undecided: reported, not failed).
    """
    from attnbench.core.registry import default_registry
    from attnbench.engine.ab import parse_side, run_ab
    from attnbench.engine.environment import collect_environment
    from attnbench.plan.suite import load_suite, with_overrides

    if not side_a and not side_b:
        raise click.UsageError("give --a and/or --b: what differs between the two sides")
    a, b = parse_side("A", side_a), parse_side("B", side_b)
    registry = default_registry()
    loaded = with_overrides(load_suite(suite), variants=tuple(variants), seq_lens=tuple(seq_lens))
    if loaded.is_quality:
        raise AttnbenchError(f"suite {suite!r} trains a task ([task]); ab pairs kernel timings. Train each side "
                             "with attnbench quality and compare the two runs (attnbench compare BASE NEW)")
    results_dir = Path(results) if results else default_results_dir()

    def progress(event, **data):
        if event == "case":
            click.echo(f"[{data['index'] + 1}/{data['total']}] {data['case'].label}: {pairs} pairs", err=True)

    if max_pairs < pairs:
        raise click.UsageError(f"--max-pairs {max_pairs} is below --pairs {pairs}")
    limits = tuple(sorted({1 + g.fraction for g in gates if g.field == "median"}))
    outcome = run_ab(loaded, registry, a, b, results_dir, pairs=pairs, max_pairs=max_pairs, limits=limits,
                     name=name, environment=collect_environment(), progress=progress)
    failed = print_ab(outcome, list(gates), threshold)
    click.echo(f"stored: {outcome.run_path}")
    finish_gates(failed, gates)


def ab_verdict(ratio: float, low: float, high: float, threshold: float) -> str:
    """'slower' / 'faster' when the interval excludes 1 and the ratio is beyond the threshold."""
    if low > 1 and ratio > 1 + threshold:
        return "slower"
    if high < 1 and ratio < 1 - threshold:
        return "faster"
    return "same"


def print_ab(outcome, gates, threshold: float) -> list[str]:
    """The paired table; returns the gate failures (a case whose interval lies wholly above a median limit)."""
    from rich.text import Text

    from attnbench.core.terminal import TextTable, make_console, print_table, shorten
    from attnbench.report.sequential import METHOD

    a, b = outcome.side_a, outcome.side_b
    rows = []
    failed: list[str] = []
    undecided: list[str] = []
    limits = sorted({1 + g.fraction for g in gates if g.field == "median"})
    for item in outcome.cases:
        label = item.case.label
        interval = item.interval
        if item.failures or interval is None:
            reason = "; ".join(item.failures) or f"fewer than {max(2, item.first_look)} pairs measured"
            rows.append((label, "–", "–", "–", str(len(item.ratios)), shorten(reason, 120)))
            if limits:
                failed.append(f"{label}: not measured on both sides ({reason})")
            continue
        verdict = ab_verdict(interval.ratio, interval.low, interval.high, threshold)
        if item.stop == "cap":
            verdict += ", undecided at the cap"
        if item.contended:
            verdict += f" ({item.contended} contended)"
        rows.append((label, format_seconds(_middle(item.a_medians)), format_seconds(_middle(item.b_medians)),
                     f"{interval.ratio:.3f} [{interval.low:.3f}, {interval.high:.3f}]", str(interval.pairs), verdict))
        for limit in limits:
            where = (f"median:{(limit - 1) * 100:g}%: {label}: B/A {interval.ratio:.3f} "
                     f"[{interval.low:.3f}, {interval.high:.3f}] after {interval.pairs} pairs")
            if interval.above(limit):
                failed.append(f"{where}, interval wholly above {limit:g}")
            elif not interval.below(limit):
                undecided.append(f"undecided: {where}, interval still holds {limit:g} at the cap of pairs")
    console = make_console()
    title = f"A/B: A = {a.text or '(as the suite)'}, B = {b.text or '(as the suite)'}"
    print_table(TextTable.of(title, ("case", "A", "B", "B/A (95% CI)", "pairs", "verdict"), rows,
                             numeric=("A", "B", "B/A (95% CI)", "pairs")), console)
    console.print(Text(f"B/A is the geometric mean of the per-pair ratios; {METHOD}."), highlight=False,
                  soft_wrap=True)
    for line in undecided:
        console.print(Text(line), highlight=False, soft_wrap=True)
    return failed


def _middle(values) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None




"""`attnbench report` and `attnbench compare`: HTML reports and run-to-run comparisons.

The lead's CLI group registers these two commands. attnbench.report is imported
inside the commands, so `attnbench --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.store import default_results_dir, load_run, resolve_run


class GateType(click.ParamType):
    """A regression gate FIELD:PCT such as ``median:5%``."""

    name = "FIELD:PCT"

    def convert(self, value, param, ctx):
        from attnbench.report.gates import Gate, parse_gate

        if isinstance(value, Gate):
            return value
        try:
            return parse_gate(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class PercentType(click.ParamType):
    """A percentage such as ``2%`` or ``2``, as a fraction."""

    name = "PCT"

    def convert(self, value, param, ctx):
        from attnbench.report.gates import parse_fraction

        if isinstance(value, float):
            return value
        try:
            return parse_fraction(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _results_option(function):
    return click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
                        help="Folder holding the runs (default: $ATTNBENCH_RESULTS or ./results).")(function)


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN...]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: reports/<run-name>.html).")
@click.option("--baseline", default=None, metavar="VARIANT",
              help="Variant that speedups and crossovers are measured against "
                   "(default: sdpa-flash if measured, else naive).")
@_results_option
def report_command(runs: tuple[str, ...], output: Path | None, baseline: str | None, results_dir: Path | None):
    """Write one self-contained HTML report of RUN (a run id, name, folder or 'latest').

    Several RUNs go into one report, told apart by line style.
    """
    from attnbench.report import write_report

    results_dir = results_dir if results_dir is not None else default_results_dir()
    loaded = [load_run(resolve_run(ref, results_dir)) for ref in runs]
    if output is None:
        from attnbench.report.build import report_file_name

        output, note = report_file_name(loaded)  # the run name is data, never a path
        if note is not None:
            click.echo(note)
    path = write_report(loaded, output, baseline=baseline)
    for run in loaded:
        for problem in run.problems:
            click.echo(f"warning: {problem}", err=True)
    click.echo(f"report written to {path}")


@click.command("compare")
@click.argument("base", metavar="BASE")
@click.argument("new", metavar="NEW")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the comparison as a self-contained HTML page.")
@click.option("--fail-on", "gates", type=GateType(), multiple=True,
              help="Exit 1 if any matched cell regresses beyond FIELD:PCT; FIELD is median, peak_memory "
                   "or error (e.g. median:5%), 'accuracy' (a NEW cell fails its tolerance), or recall:PCT "
                   "(a trained configuration's recall drops by more than PCT points: recall:5% fails a drop "
                   "beyond 0.05). A median gate fails on a significant slowdown, or on the ratio alone where "
                   "the samples are too few to test. Repeatable.")
@click.option("--threshold", type=PercentType(), default="2%", show_default=True,
              help="Smallest change of the median that counts as faster or slower.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
              help="Significance level of the Mann–Whitney U test.")
@_results_option
def compare_command(base: str, new: str, output: Path | None, gates, threshold: float, alpha: float,
                    results_dir: Path | None):
    """Compare run NEW against run BASE cell by cell (matched by case id).

    Each cell gets the NEW/BASE ratio of median times and a verdict whose unit
    is the worker process: with both runs measured by `run --processes K`
    (K >= 2; 3 recommended), faster or slower when every NEW process median
    lies beyond every BASE one and the change exceeds THRESHOLD, else same;
    with one process on a side, 'one process' (its samples share the process's
    luck, so within-process evidence is shown but not trusted), or contended.
    --fail-on median:PCT fails a cell whose process range lies wholly above
    1 + PCT, or, with one process per side, whose ratio exceeds 1 + PCT times
    the between-process spread. Quality cells (attnbench quality) are matched
    by configuration and compared by recall, the mean over their seeds:
    lower, higher or same. Exit status is 1 when a --fail-on gate fails. To
    gate a small change in CI, measure both sides in alternation with
    `attnbench ab`.
    """
    from attnbench.report.compare import compare_runs
    from attnbench.report.compare_view import print_comparison, write_compare_report
    from attnbench.report.gates import gate_failures, ungated

    results_dir = results_dir if results_dir is not None else default_results_dir()
    base_run = load_run(resolve_run(base, results_dir))
    new_run = load_run(resolve_run(new, results_dir))
    comparison = compare_runs(base_run, new_run, threshold=threshold, alpha=alpha)
    print_comparison(comparison)
    failed = gate_failures(comparison, list(gates))
    for line in ungated(comparison, list(gates)):
        click.echo(line, err=True)
    if output is not None:
        path = write_compare_report(comparison, output, failed, list(gates))
        click.echo(f"comparison written to {path}")
    finish_gates(failed, gates)


def finish_gates(failed: list[str], gates) -> None:
    """Print the gate failures and exit 1, or say the gates passed (`compare` and `ab` alike)."""
    if failed:
        click.echo(f"{len(failed)} regression(s) beyond {', '.join(str(g) for g in gates)}:", err=True)
        for line in failed:
            click.echo(f"  {line}", err=True)
        raise SystemExit(1)
    if gates:
        click.echo(f"gates passed: {', '.join(str(g) for g in gates)}")

"""The `attnbench` command line.

    attnbench list [NAME]... [--verbose] [--json] [--presets]
    attnbench run SUITE [--device cpu|cuda|auto] [--variant NAME]... [--seq-len N]... [--preset MODEL]
                  [--name RUN_NAME] [--results DIR] [--resume RUN] [--executor local|ray] [--no-report]
                  [--recalibrate] [--processes K] [--profile]
    attnbench runs [--results DIR]
    attnbench show RUN [--results DIR]
    attnbench export RUN --format csv|parquet|json|pytest-benchmark -o FILE
    attnbench report RUN [RUN...] [-o FILE.html]
    attnbench compare BASE NEW [-o FILE.html] [--fail-on median:5%]
    attnbench profile VARIANT --seq-len N [case options] [-o DIR]
    attnbench ab SUITE --a SIDE --b SIDE [--pairs N] [--fail-on median:5%]
    attnbench capture ENTRY -o OUT [--layer K]... [--seq-len N] [--module NAME]
    attnbench quality SUITE [--steps N] [--seeds K] [--variant NAME]... [--seq-len N]... [--resume RUN]

Exit status: 0 done, 1 a gate failed, 2 the input was wrong (nothing was run),
3 the run stopped before its end (disk full, interrupted); what was stored is kept.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from attnbench.cli.running import (
    RESULTS_HELP,
    _output_folders,
    _plan_new_run,
    _results_dir,
    _sweep,
    _write_run_report,
)
from attnbench.core.errors import AttnbenchError, RunStopped
from attnbench.core.registry import default_registry
from attnbench.engine.environment import collect_environment
from attnbench.engine.executors import make_executor
from attnbench.engine.sweep import resume_run, run_suite
from attnbench.measure.profiling import profile_run
from attnbench.store import list_runs, load_run, resolve_run
from attnbench.store.export import export_run


class UserInputError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"attnbench: error: {self.format_message()}", err=True, file=file)


INTERNAL_ERROR_EXIT = 4


class AttnbenchGroup(click.Group):
    """Turns every AttnbenchError into its message and exit status 2 (3: the run stopped), never a traceback;
    any other exception is an internal error: exit 4, with the traceback written to a file."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AttnbenchError as exc:
            error = UserInputError(str(exc))
            if isinstance(exc, RunStopped):
                error.exit_code = 3
            raise error from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit,
                KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # a bug in attnbench or a plugin, not the user's input
            _internal_error(exc)


def _internal_error(exc: Exception) -> None:
    """Say what failed, where the traceback is and how to report it; exit INTERNAL_ERROR_EXIT."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = None
    try:
        handle, name = tempfile.mkstemp(prefix="attnbench-traceback-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        where = name
    except OSError:
        pass
    message = str(exc).splitlines()[0][:500] if str(exc) else ""
    click.echo(f"attnbench: internal error: {type(exc).__name__}: {message}", err=True)
    click.echo(f"the traceback is in {where}" if where else "the traceback could not be written; here it is:\n" + text,
               err=True)
    click.echo("A run it stopped is marked interrupted and stays resumable: attnbench run --resume RUN. "
               "This is a bug (in attnbench or a plugin): please report it on the project's issue tracker "
               "with that traceback file and the output of `attnbench --version`.", err=True)
    sys.exit(INTERNAL_ERROR_EXIT)


@click.group(cls=AttnbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attnbench")
def main() -> None:
    """Benchmark and profile attention implementations: time, memory and accuracy per cell."""


@main.command("list")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (every variant, or the NAMEs)")
@click.option("--verbose", "-v", is_flag=True, help="every variant in full: knobs with their docs, every reason")
@click.option("--presets", is_flag=True, help="list the model presets (a suite's 'preset' key, --preset) instead")
def list_command(names: tuple[str, ...], as_json: bool, verbose: bool, presets: bool) -> None:
    """Every variant on one line: its family and whether it runs here, or the first reason why not.

    NAME shows that variant in full: what it computes, its knobs with their docs, and every reason per
    device (--verbose: every variant). With --presets, the model presets.
    """
    if presets:
        _list_presets(as_json)
        return
    import torch

    from attnbench.cli.listing import check_names, failure_rows, print_listing, variant_rows

    registry = default_registry()
    check_names(registry, names)
    rows = variant_rows(registry)
    failures = failure_rows(registry)
    if as_json:
        chosen = [r for r in rows if r["name"] in names] if names else rows
        click.echo(json.dumps({"variants": chosen, "failed_plugins": failures,
                               "cuda_available": torch.cuda.is_available()}, indent=2))
        return
    print_listing(rows, failures, torch.cuda.is_available(), names=names, verbose=verbose)


def _list_presets(as_json: bool) -> None:
    from dataclasses import asdict

    from attnbench.core.presets import PRESETS
    from attnbench.core.terminal import TextTable, print_table

    if as_json:
        click.echo(json.dumps({"presets": [asdict(p) for p in PRESETS.values()]}, indent=2))
        return
    print_table(TextTable.of("attnbench model presets (set 'preset' in a suite's [defaults] or [sweep], or --preset)",
                             ("preset", "shape", "source"),
                             [(p.name, p.shape_text, p.source) for p in PRESETS.values()]))


@main.command("run")
@click.argument("suite", required=False)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="run every cell on this device (default: the suite's)")
@click.option("--variant", "variants", multiple=True, help="run only these variants (repeatable)")
@click.option("--seq-len", "seq_lens", multiple=True, type=int, help="sweep these lengths instead (repeatable)")
@click.option("--preset", default=None, help="a model preset's heads, kv_heads, head dims, causal and mask "
              "(attnbench list --presets), replacing the suite's [defaults] for them")
@click.option("--name", default=None, help="run name (default: the suite's name)")
@click.option("--results", default=None, help=RESULTS_HELP)
@click.option("--resume", default=None, metavar="RUN", help="continue a stored run; finished cells are not run again")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (with --executor ray)")
@click.option("--no-report", is_flag=True, help="do not write the HTML report at the end")
@click.option("--recalibrate", is_flag=True, help="measure the machine's peak again instead of using the cache")
@click.option("--processes", type=click.IntRange(min=1), default=None, metavar="K",
              help="repeat each cell's measurement in K fresh worker processes (default: measure.processes)")
@click.option("--profile", "profile", is_flag=True, help="also profile every ok cell into <run>/profiles/<case_id>/")
@click.option("--durations", is_flag=True,
              help="end with where the time went: start-up, calibration, each stage of the cells, report")
def run_command(suite, device, variants, seq_lens, preset, name, results, resume, executor, address, no_report,
                recalibrate, processes, profile, durations) -> None:
    """Run SUITE (a built-in name such as 'quick', or a .toml path) and store every cell."""
    from attnbench.cli.durations import StageClock
    from attnbench.cli.progress import print_summary

    clock = StageClock()
    clock.start()

    results_dir = _results_dir(results)
    registry = default_registry()
    if resume is None and suite is None:
        raise AttnbenchError("give a SUITE to run (a built-in name such as 'quick' or a .toml path), "
                             "or --resume RUN")
    if resume is not None and (variants or seq_lens or device or name or preset):
        raise AttnbenchError("--resume continues a run exactly as it started; drop --variant, --seq-len, "
                             "--device, --preset and --name")
    executor_options = {}
    if executor == "ray" and address:
        executor_options["address"] = address
    if resume is not None:
        run_path = resolve_run(resume, results_dir)
        if executor == "local":
            executor_options["calibration"] = load_run(run_path).run.calibration or None
        exec_ = make_executor(executor, **executor_options)
        outcome = _sweep(exec_, lambda progress: resume_run(run_path, registry, executor=exec_, progress=progress))
    else:
        folders = _output_folders(results_dir, no_report)
        loaded, overrides, calibration = _plan_new_run(suite, device, variants, seq_lens, executor, processes,
                                                       recalibrate, registry, folders=folders, preset=preset)
        clock.mark("planning and calibration")
        if executor == "local":
            executor_options["calibration"] = calibration
        exec_ = make_executor(executor, **executor_options)
        outcome = _sweep(exec_, lambda progress: run_suite(
            loaded, registry, results_dir, name=name, overrides=overrides, executor=exec_,
            environment=collect_environment(), calibration=calibration, progress=progress))
    clock.mark(SWEEP_STAGE)
    print_summary(outcome.run_path)
    clock.mark("summary")
    if profile:
        index = profile_run(outcome.run_path, progress=click.echo)
        failed = sum(1 for entry in index.values() if "error" in entry)
        click.echo(f"profiles: {outcome.run_path / 'profiles'} ({len(index) - failed} cells, {failed} failed)")
        clock.mark("profiles")
    if not no_report:
        _write_run_report(outcome.run_path, registry)
        clock.mark("report")
    if durations:
        _print_durations(clock, outcome.run_path)


SWEEP_STAGE = "sweep (the cells)"


def _print_durations(clock, run_path) -> None:
    """The stages of this command and of its cells (`attnbench.cli.durations`)."""
    from attnbench.cli.durations import durations_table, run_stages
    from attnbench.core.terminal import print_table

    results = [cell.result for cell in load_run(run_path).cells]
    print_table(durations_table(run_stages(clock, SWEEP_STAGE, results)))


@main.command("runs")
@click.option("--results", default=None, help=RESULTS_HELP)
def runs_command(results) -> None:
    """Stored runs, newest first."""
    from attnbench.core.terminal import TextTable, print_table

    results_dir = _results_dir(results)
    runs = list_runs(results_dir)
    if not runs:
        click.echo(f"no runs in {results_dir}")
        return
    rows = []
    for loaded in runs:
        ok = sum(1 for cell in loaded.cells if cell.result.status == "ok")
        rows.append((loaded.run.run_id, loaded.run.name, loaded.run.suite_name, loaded.run.started_at, loaded.status,
                     str(len(loaded.cells)), str(ok)))
    print_table(TextTable.of(f"runs in {results_dir}", ("run id", "name", "suite", "started", "status", "cells", "ok"),
                             rows, numeric=("cells", "ok")))


@main.command("show")
@click.argument("run")
@click.option("--results", default=None, help=RESULTS_HELP)
def show_command(run, results) -> None:
    """A run as terminal tables: median time, peak memory and error per variant and seq_len."""
    from attnbench.cli.progress import print_summary

    print_summary(resolve_run(run, _results_dir(results)), full=True)


@main.command("export")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json", "pytest-benchmark"]), required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="file to write")
@click.option("--results", default=None, help=RESULTS_HELP)
def export_command(run, fmt, output, results) -> None:
    """Write a run's tidy table (one row per cell) as CSV, Parquet or JSON, or as pytest-benchmark JSON."""
    loaded = load_run(resolve_run(run, _results_dir(results)))
    path = export_run(loaded, fmt, Path(output))
    click.echo(f"wrote {path} ({len(loaded.cells)} cells, {fmt})")


def _register_optional_commands() -> None:
    try:
        from attnbench.cli.report import compare_command, report_command
    except ImportError:
        pass
    else:
        main.add_command(report_command)
        main.add_command(compare_command)
    try:
        from attnbench.cli.ab import ab_command
    except ImportError:
        pass
    else:
        main.add_command(ab_command)
    try:
        from attnbench.cli.profile import profile_command
    except ImportError:
        pass
    else:
        main.add_command(profile_command)
    from attnbench.cli.capture import capture_command
    main.add_command(capture_command)
    from attnbench.cli.quality import quality_command
    main.add_command(quality_command)


_register_optional_commands()


if __name__ == "__main__":
    main()

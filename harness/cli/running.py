"""What `run` and `quality` share: planning a new run (suite, overrides, calibration), its end, its report."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from attnbench.core.errors import DeviceError
from attnbench.core.names import ensure_writable_dir
from attnbench.engine.sweep import Overrides, RunInterrupted, plan_cases
from attnbench.measure.attention_maps import write_attention_maps
from attnbench.measure.calibration import calibrate_cases
from attnbench.measure.calibration import describe as describe_calibration
from attnbench.plan.suite import load_suite
from attnbench.store import default_results_dir, load_run

RESULTS_HELP = "folder of run folders (default: $ATTNBENCH_RESULTS or ./results)"


def _results_dir(value: str | None) -> Path:
    return Path(value) if value else default_results_dir()


def _plan_new_run(suite, device, variants, seq_lens, executor, processes, recalibrate, registry, folders=(),
                  preset=None, steps=None, seeds=None):
    """Load and check the suite, then calibrate the machine (local executor only): nothing runs on bad input."""
    loaded = load_suite(suite)
    if processes is not None:
        loaded = replace(loaded, measure=replace(loaded.measure, processes=processes))
    overrides = Overrides(variants=tuple(variants), seq_lens=tuple(seq_lens),
                          device=_resolve_device(device, remote=executor != "local"), preset=preset,
                          steps=steps, seeds=seeds)
    cases = plan_cases(overrides.apply(loaded), registry)
    for path, what, hint in folders:  # a bad results or reports folder is found before the calibration runs
        ensure_writable_dir(path, what, hint)
    calibration: dict = {}
    if executor == "local":  # on Ray the cells run on other machines: this one's peak would mislead
        calibration = calibrate_cases(cases, recalibrate=recalibrate)
        click.echo(describe_calibration(calibration), err=True)
    return loaded, overrides, calibration


def _resolve_device(device: str | None, remote: bool = False) -> str | None:
    if device is None:
        return None
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available() and not remote:
        raise DeviceError("--device cuda was asked for, but torch sees no CUDA device here "
                          f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                          "use --device cpu or --device auto")
    return device


def _interrupted(stop) -> None:
    click.echo(f"\nattnbench: run interrupted; {stop.stored} cells are stored in {stop.run_path}.\n"
               f"Continue it with: attnbench run --resume {stop.run_path}", err=True)
    sys.exit(3)


def _output_folders(results_dir: Path, no_report: bool) -> list[tuple[Path, str, str]]:
    """The folders a new run writes (results, and reports unless --no-report), each with its name and a way out."""
    folders = [(results_dir, "results folder", "choose another with --results or $ATTNBENCH_RESULTS")]
    if not no_report:
        folders.append((Path("reports"), "reports folder", "run from another folder or pass --no-report"))
    return folders


def _sweep(executor, start):
    """`start(progress)` under a progress bar, `executor` closed however it ends; an interrupted sweep exits saying how to resume."""
    from attnbench.cli.progress import SweepProgress

    try:
        with SweepProgress() as progress:
            return start(progress)
    except RunInterrupted as stop:
        _interrupted(stop)
    finally:
        executor.close()


def _write_run_report(run_path: Path, registry) -> None:
    try:  # the report's extras (matplotlib, seaborn, jinja2) may be missing
        from attnbench.report import write_report
    except ImportError:
        return
    loaded = load_run(run_path)
    names = sorted({cell.case.get("variant") for cell in loaded.cells})
    try:
        write_attention_maps(run_path, registry, names)
    except Exception as exc:  # the maps are a nicety; the run is already stored
        click.echo(f"attnbench: attention maps not written: {exc}", err=True)
    from attnbench.report.build import report_file_name

    output, note = report_file_name([loaded])  # the name is data, never a path
    if note is not None:
        click.echo(note)
    path = write_report([load_run(run_path)], output)
    click.echo(f"report: {path}")

"""`attnbench quality SUITE`: train a task (MQAR) per variant and store recall beside the kernel cost.

The cells run like any others (isolated workers, one durable run folder,
`--resume`), so `show`, `export`, `compare` and `report` read them too.
"""

from __future__ import annotations

import click

from attnbench.core.errors import AttnbenchError

QUALITY_SUITES = ("mqar", "mqar-long")


@click.command("quality")
@click.argument("suite", required=False)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="training steps per cell (default: the suite's task.steps)")
@click.option("--seeds", type=click.IntRange(min=1), default=None, metavar="K",
              help="train every configuration with seeds 0..K-1 (default: the suite's seeds)")
@click.option("--variant", "variants", multiple=True, help="train only these variants (repeatable)")
@click.option("--seq-len", "seq_lens", multiple=True, type=int, help="these lengths instead (repeatable)")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="train every cell on this device (default: the suite's)")
@click.option("--name", default=None, help="run name (default: the suite's name)")
@click.option("--results", default=None, help="folder of run folders (default: $ATTNBENCH_RESULTS or ./results)")
@click.option("--resume", default=None, metavar="RUN", help="continue a stored run; finished cells are not run again")
@click.option("--no-report", is_flag=True, help="do not write the HTML report at the end")
def quality_command(suite, steps, seeds, variants, seq_lens, device, name, results, resume, no_report) -> None:
    """Train SUITE's task (built-in: mqar) with each variant as the sequence mixer; store recall and cost.

    Every configuration (variant, knobs, seq_len, width) trains a small model
    for the task's step budget per seed, then measures recall on a held-out
    set; each trained shape is also timed as a kernel cell, so the report can
    draw recall against time per call. --steps and --seeds scale it up.
    """

    from attnbench.cli.progress import print_summary
    from attnbench.cli.running import (
        _output_folders,
        _plan_new_run,
        _results_dir,
        _sweep,
        _write_run_report,
    )
    from attnbench.core.registry import default_registry
    from attnbench.engine.environment import collect_environment
    from attnbench.engine.executors import make_executor
    from attnbench.engine.sweep import resume_run, run_suite
    from attnbench.plan.suite import load_suite
    from attnbench.store import load_run, resolve_run

    results_dir = _results_dir(results)
    registry = default_registry()
    if resume is None and suite is None:
        raise AttnbenchError(f"give a SUITE with a [task] table (built-in: {', '.join(QUALITY_SUITES)}), "
                             "or --resume RUN")
    if resume is not None and (steps or seeds or variants or seq_lens or device or name):
        raise AttnbenchError("--resume continues a run exactly as it started; drop the other options")
    if resume is not None:
        run_path = resolve_run(resume, results_dir)
        exec_ = make_executor("local", calibration=load_run(run_path).run.calibration or None)
        outcome = _sweep(exec_, lambda progress: resume_run(run_path, registry, executor=exec_, progress=progress))
    else:
        if not load_suite(suite).is_quality:
            raise AttnbenchError(f"suite {suite!r} has no [task] table, so there is nothing to train; "
                                 f"attnbench quality runs task suites (built-in: {', '.join(QUALITY_SUITES)}), "
                                 f"attnbench run {suite} times kernels")
        folders = _output_folders(results_dir, no_report)
        loaded, overrides, calibration = _plan_new_run(suite, device, variants, seq_lens, "local", None, False,
                                                       registry, folders=folders, steps=steps, seeds=seeds)
        exec_ = make_executor("local", calibration=calibration)
        outcome = _sweep(exec_, lambda progress: run_suite(
            loaded, registry, results_dir, name=name, overrides=overrides, executor=exec_,
            environment=collect_environment(), calibration=calibration, progress=progress))
    print_summary(outcome.run_path)
    if not no_report:
        _write_run_report(outcome.run_path, registry)

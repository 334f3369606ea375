"""The sweep engine: expand a suite, run each cell in isolation, commit each result before the next.

The driver decides what runs (resume, out-of-memory skips, analytic memory
checks, unsupported cases) and alone writes the run folder; an executor runs
the cells. Killing the driver loses at most the cell in flight; `resume`
picks up from the stored cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.core.case import Case
from attnbench.core.errors import RunStopped, StoreError
from attnbench.core.result import Result, Run
from attnbench.core.units import format_bytes
from attnbench.engine.local_executor import LocalExecutor
from attnbench.plan.suite import Suite, expand, parse_suite, with_overrides
from attnbench.store import Cell, RunWriter, new_run_id, now_iso


class RunInterrupted(Exception):
    """The user stopped the run (Ctrl-C); every finished cell is stored."""

    def __init__(self, run_path: Path, stored: int) -> None:
        super().__init__(f"run interrupted; {stored} cells stored in {run_path}")
        self.run_path = run_path
        self.stored = stored


@dataclass(frozen=True)
class Overrides:
    """What the command line changed in the suite; stored with the run so `--resume` re-applies it."""

    variants: tuple[str, ...] = ()
    seq_lens: tuple[int, ...] = ()
    device: str | None = None
    preset: str | None = None
    steps: int | None = None
    seeds: int | None = None

    def apply(self, suite: Suite) -> Suite:
        return with_overrides(suite, variants=self.variants, seq_lens=self.seq_lens, device=self.device,
                              preset=self.preset, steps=self.steps, seeds=self.seeds)


@dataclass
class SweepOutcome:
    run_path: Path
    run_id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped_as_done: int = 0


Progress = Callable[..., None]


def _silent(event: str, **data: Any) -> None:
    return None


def plan_cases(suite: Suite, registry) -> list[Case]:
    """Every cell of the suite, validated; raises SuiteError/UnknownVariantError before anything runs."""
    return expand(suite, registry)


def run_suite(suite: Suite, registry, results_dir: Path, *, name: str | None = None,
              overrides: Overrides = Overrides(), executor=None, environment: dict | None = None,
              calibration: dict | None = None, progress: Progress = _silent) -> SweepOutcome:
    """Run a new sweep of `suite` into a new folder under `results_dir`."""
    effective = overrides.apply(suite)
    cases = plan_cases(effective, registry)
    run = Run(run_id=new_run_id(name or suite.name), name=name or suite.name, suite_name=suite.name,
              suite_text=suite.text, started_at=now_iso(), environment=environment or {},
              calibration=calibration or {},
              settings={"overrides": _overrides_dict(overrides), "measure": effective.measure.to_dict(),
                        "source": suite.source, "cells_planned": len(cases)},
              harness_version=(environment or {}).get("attnbench") or "")
    writer = RunWriter.create(results_dir, run)
    return _drive(writer, cases, effective, registry, executor, progress, done=set(), previous=())


def resume_run(run_path: Path, registry, *, executor=None, progress: Progress = _silent) -> SweepOutcome:
    """Continue a stored run: cells already stored are not run again."""
    writer, loaded = RunWriter.reopen(run_path)
    try:
        suite = parse_suite(loaded.run.suite_text, source=f"{run_path}/run.json (suite_text)")
        stored = loaded.run.settings.get("overrides") or {}
        overrides = Overrides(variants=tuple(stored.get("variants") or ()),
                              seq_lens=tuple(stored.get("seq_lens") or ()), device=stored.get("device"),
                              preset=stored.get("preset"), steps=stored.get("steps"), seeds=stored.get("seeds"))
        effective = overrides.apply(suite)
        cases = plan_cases(effective, registry)
    except Exception:
        writer.close(loaded.run.status if loaded.run.status != "running" else "interrupted")
        raise
    return _drive(writer, cases, effective, registry, executor, progress,
                  done=loaded.case_ids(), previous=loaded.cells)


def _overrides_dict(overrides: Overrides) -> dict[str, Any]:
    return {"variants": list(overrides.variants), "seq_lens": list(overrides.seq_lens), "device": overrides.device,
            "preset": overrides.preset, "steps": overrides.steps, "seeds": overrides.seeds}


def _variant_meta(registry, case: Case) -> dict[str, Any]:
    variant = registry.variants.get(case.variant)
    if variant is None:
        return {}
    return {"family": variant.family, "computes": variant.computes, "approximates": variant.approximation(case),
            "distribution": registry.origins.get(case.variant)}


def _drive(writer: RunWriter, cases: list[Case], suite: Suite, registry, executor, progress: Progress,
           done: set[str], previous) -> SweepOutcome:
    own_executor = executor is None
    executor = executor or LocalExecutor()
    if hasattr(executor, "note_distributions"):
        executor.note_distributions(registry.origins)
    settings = suite.measure
    counts: dict[str, int] = {}
    oom_at: dict[str, int] = {}
    for cell in previous:
        if cell.result.status == "oom":
            case = Case.from_dict(cell.case)
            oom_at[case.config_key] = min(case.seq_len, oom_at.get(case.config_key, case.seq_len))
    todo = [case for case in cases if case.id not in done]
    progress("start", run_path=writer.path, total=len(cases), todo=len(todo), done=len(cases) - len(todo))

    def record(case: Case, result: Result) -> None:
        cell = Cell(case_id=case.id, case=case.to_dict(), result=result,
                    meta=_variant_meta(registry, case), recorded_at=now_iso())
        try:
            writer.append(cell)
        except OSError as exc:
            raise RunStopped(f"cannot append cell {case.label} to {writer.path / 'cells.jsonl'}: "
                             f"{exc.strerror or exc}. Every cell stored before it is intact; free space "
                             f"and continue with: attnbench run --resume {writer.path}") from None
        counts[result.status] = counts.get(result.status, 0) + 1
        if result.status == "oom":
            oom_at[case.config_key] = min(case.seq_len, oom_at.get(case.config_key, case.seq_len))
        progress("done", case=case, result=result)

    def runnable():
        for case in todo:
            skip = _precheck(case, registry, executor, settings, oom_at)
            if skip is not None:
                record(case, skip)
                continue
            yield case

    stored = 0
    try:
        def on_progress(case: Case, message: dict) -> None:
            progress("step", case=case, step=message["step"], steps=message["steps"], loss=message["loss"])

        for case, result in executor.map(runnable(), settings, on_start=lambda c: progress("cell", case=c),
                                         on_progress=on_progress):
            record(case, result)
            stored += 1
    except KeyboardInterrupt:
        _close_quietly(executor, own_executor)
        writer.close("interrupted")
        raise RunInterrupted(writer.path, sum(counts.values()) + len(done)) from None
    except BaseException:  # a full disk (RunStopped) or an internal error: the run stays resumable, like a Ctrl-C
        _close_quietly(executor, own_executor)
        try:
            writer.close("interrupted")
        except OSError:
            pass
        raise
    _close_quietly(executor, own_executor)
    _store_restarts(writer, executor)
    writer.close("finished")
    return SweepOutcome(run_path=writer.path, run_id=writer.run.run_id, status="finished", counts=counts,
                        skipped_as_done=len(cases) - len(todo))


def _store_restarts(writer: RunWriter, executor) -> None:
    """The worker restarts the executor made (for leaks, or between distributions) go into run.json."""
    summary = getattr(executor, "restart_summary", None)
    if summary is not None:
        writer.update(settings={**writer.run.settings, "worker_restarts": summary()})


def _close_quietly(executor, own: bool) -> None:
    if own:
        try:
            executor.close()
        except Exception:
            pass


def _precheck(case: Case, registry, executor, settings, oom_at: dict[str, int]) -> Result | None:
    """A stored result for a cell that must not run, or None to run it."""
    variant = registry.get(case.variant)
    if not getattr(executor, "remote", False):
        reasons = variant.unsupported_reasons(case)
        if reasons:
            return Result("unsupported", "; ".join(reasons), started_at=now_iso())
    limit = oom_at.get(case.config_key)
    if limit is not None and case.seq_len > limit:
        return Result("skipped", f"this configuration ran out of memory at seq_len={limit} in this run, "
                                 f"so the longer seq_len={case.seq_len} was not tried", started_at=now_iso())
    too_much = _over_flop_limit(case, variant, settings)
    if too_much is not None:
        return Result("skipped", too_much, started_at=now_iso())
    predicted = variant.memory_model(case)
    if predicted is not None:
        needed = predicted + case.input_bytes
        available = executor.available_memory(case.device)
        if available is not None and needed > available * settings.memory_headroom:
            return Result("skipped", f"predicted peak {format_bytes(needed)} (memory model of {case.variant} plus inputs) "
                                     f"exceeds {settings.memory_headroom:.0%} of the {format_bytes(available)} available "
                                     f"on {case.device}; not run", started_at=now_iso())
    return None


def _over_flop_limit(case: Case, variant, settings) -> str | None:
    """Why a cell is above `measure.max_gflops` (the forward FLOPs it executes), or None."""
    limit = getattr(settings, "max_gflops", 0.0)
    if not limit:
        return None
    try:
        executed = variant.performed_flops(case) or variant.flops(case)
    except NotImplementedError:
        return None
    if executed is None or executed <= limit * 1e9:
        return None
    return (f"its forward executes {executed / 1e9:.1f} GFLOP, above this suite's measure.max_gflops = {limit:g}; "
            "raise max_gflops in [measure] to run it (on a faster machine)")


__all__ = ["RunInterrupted", "RunStopped", "Overrides", "SweepOutcome", "run_suite", "resume_run", "StoreError"]

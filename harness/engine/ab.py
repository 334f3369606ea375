"""Paired A/B measurement: two sides timed in alternation in one session, the ratio taken pair by pair.

Separate runs on a shared machine drift by more than the changes a CI wants
to catch. Here every case of a suite is measured on each side, A and B
alternating (A B, then B A, so a steady drift moves both sides alike), each
side in its own long-lived worker process. Pair i's ratio is
median_B / median_A of the two measurements taken back to back; the paired
ratio is their geometric mean.

Sequential: with gate limits (``--fail-on median:5%`` gives 1.05), a case
takes `pairs` pairs, then one more pair at a time until the always-valid
interval of its ratio (`attnbench.report.sequential`) lies wholly above or
wholly below every limit, or `max_pairs` is reached (then it is
undecided). Without limits every case takes exactly `pairs` pairs.

A side is a variant and knob values, and/or an interpreter, PYTHONPATH
entries and environment variables, so the same tool A/Bs two variants, two
knob settings, two checkouts of a plugin or two virtual environments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.result import Result, Run
from attnbench.engine.side_worker import SideWorker
from attnbench.plan.suite import Suite, expand
from attnbench.store import RunWriter, new_run_id, now_iso

AB_FILE = "ab.jsonl"
SUMMARY_FILE = "ab.json"
SIDE_KEYS = ("variant", "python", "pythonpath", "param.KNOB", "env.NAME")


@dataclass(frozen=True)
class Side:
    """What one side changes: the variant, knob values, the interpreter, PYTHONPATH, variables."""

    label: str
    text: str = ""
    variant: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    python: str | None = None
    pythonpath: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def apply(self, case: Case) -> Case:
        """The case this side measures in place of `case`."""
        params = {**(case.params if self.variant is None else {}), **self.params}
        return replace(case, variant=self.variant or case.variant, params=params)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "text": self.text, "variant": self.variant, "params": self.params,
                "python": self.python, "pythonpath": list(self.pythonpath), "env": self.env}


def parse_side(label: str, text: str) -> Side:
    """'naive', 'variant=naive,param.block=64', 'pythonpath=../old', 'python=/venv/bin/python,env.X=1'.

    A bare word is a variant name; otherwise comma-separated KEY=VALUE items
    with KEY one of variant, python, pythonpath (repeatable), param.KNOB, env.NAME.
    """
    text = (text or "").strip()
    side = Side(label=label, text=text)
    if not text:
        return side
    if "=" not in text and "," not in text:
        return replace(side, variant=text)
    params: dict[str, Any] = {}
    env: dict[str, str] = {}
    paths: list[str] = []
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise AttnbenchError(f"--{label.lower()} {text!r}: {item!r} is not KEY=VALUE; KEY is one of "
                                 f"{', '.join(SIDE_KEYS)} (or give a bare variant name)")
        value = value.strip()
        if key == "variant" or key == "python":
            values[key] = value
        elif key == "pythonpath":
            paths.append(str(Path(value).expanduser().resolve()))
        elif key.startswith("param.") and len(key) > 6:
            params[key[6:]] = _knob_value(value)
        elif key.startswith("env.") and len(key) > 4:
            env[key[4:]] = value
        else:
            raise AttnbenchError(f"--{label.lower()} {text!r}: unknown key {key!r}; expected one of "
                                 f"{', '.join(SIDE_KEYS)}")
    if "python" in values and not os.access(values["python"], os.X_OK):
        raise AttnbenchError(f"--{label.lower()} {text!r}: python={values['python']} is not an executable "
                             "interpreter; give the path of a virtual environment's bin/python")
    for path in paths:
        if not Path(path).is_dir():
            raise AttnbenchError(f"--{label.lower()} {text!r}: pythonpath={path} is not a folder")
    return replace(side, variant=values.get("variant"), python=values.get("python"), pythonpath=tuple(paths),
                   params=params, env=env)


def _knob_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Measurement:
    """One side's measurement of one case in one pair."""

    case_id: str
    side: str
    pair: int
    case: dict[str, Any]
    result: Result

    def to_json(self) -> str:
        return json.dumps({"case_id": self.case_id, "side": self.side, "pair": self.pair, "case": self.case,
                           "result": self.result.to_dict()}, sort_keys=True, default=str)


@dataclass(frozen=True)
class PairedCase:
    """One case of the suite: every pair's medians, the per-pair ratios B/A, failed measurements, and why it stopped.

    first_look: the pairs taken before the first look (``--pairs``); the
    interval is the always-valid one at the last look (`sequential_interval`).
    stop: 'fixed' (no gate limits: exactly `first_look` pairs), 'decided' (the
    interval lies wholly above or below every limit) or 'cap' (max_pairs
    reached undecided).
    """

    case: Case
    a_medians: tuple[float, ...]
    b_medians: tuple[float, ...]
    ratios: tuple[float, ...]
    failures: tuple[str, ...] = ()
    contended: int = 0
    first_look: int = 2
    stop: str = "fixed"

    @cached_property
    def interval(self):
        """The always-valid interval at the last look (`sequential_interval`), or None before the first look."""
        from attnbench.report.sequential import sequential_interval

        if len(self.ratios) < max(2, self.first_look):
            return None
        return sequential_interval(self.ratios, self.first_look)


@dataclass
class ABOutcome:
    run_path: Path
    side_a: Side
    side_b: Side
    pairs: int
    cases: list[PairedCase]


Progress = Callable[..., None]


def run_ab(suite: Suite, registry, side_a: Side, side_b: Side, results_dir: Path, *, pairs: int = 6,
           max_pairs: int | None = None, limits: tuple[float, ...] = (), name: str | None = None,
           environment: dict | None = None, progress: Progress = lambda *a, **k: None) -> ABOutcome:
    """Measure every case of `suite` on both sides in alternation and store each measurement.

    `pairs` pairs first; with `limits`, more pairs one at a time until the
    interval decides against every limit or `max_pairs` (default 5 × pairs) is reached.
    """
    if pairs < 2:
        raise AttnbenchError(f"--pairs {pairs}: a paired interval needs at least 2 pairs (6 or more recommended)")
    max_pairs = max_pairs or 5 * pairs
    if max_pairs < pairs:
        raise AttnbenchError(f"--max-pairs {max_pairs} is below --pairs {pairs}: the cap must allow the first look")
    cases = expand(suite, registry)
    for side in (side_a, side_b):
        _check_side(side, cases, registry)
    run = Run(run_id=new_run_id(name or f"ab-{suite.name}"), name=name or f"ab-{suite.name}",
              suite_name=suite.name, suite_text=suite.text, started_at=now_iso(), environment=environment or {},
              settings={"ab": {"a": side_a.to_dict(), "b": side_b.to_dict(), "pairs": pairs,
                               "max_pairs": max_pairs, "limits": list(limits),
                               "order": "A B, then B A, alternating"},
                        "measure": suite.measure.to_dict(), "source": suite.source, "cells_planned": 0})
    writer = RunWriter.create(results_dir, run)
    path = writer.path
    workers = {side.label: SideWorker(side.label, side.python, side.pythonpath, side.env,
                                      log_path=path / f"side-{side.label}.log") for side in (side_a, side_b)}
    outcome = ABOutcome(run_path=path, side_a=side_a, side_b=side_b, pairs=pairs, cases=[])
    status = "interrupted"
    try:
        with open(path / AB_FILE, "a", encoding="utf-8") as log:
            for index, case in enumerate(cases):
                progress("case", case=case, index=index, total=len(cases))
                outcome.cases.append(_measure_pairs(case, (side_a, side_b), workers, suite, pairs, max_pairs,
                                                    limits, log, progress, registry))
        status = "finished"
    finally:
        for worker in workers.values():
            worker.stop()
        _write_summary(path / SUMMARY_FILE, outcome)
        writer.close(status)
    return outcome


def _check_side(side: Side, cases: list[Case], registry) -> None:
    """A side's variant and knobs are checked here when this interpreter knows the variant."""
    name = side.variant or (cases[0].variant if cases else None)
    variant = registry.variants.get(name) if name else None
    if side.variant and variant is None and side.python is None and not side.pythonpath:
        raise AttnbenchError(f"--{side.label.lower()} {side.text!r}: unknown variant {side.variant!r}; "
                             "`attnbench list` shows the installed ones")
    if variant is not None:
        unknown = sorted(set(side.params) - set(variant.params))
        if unknown:
            raise AttnbenchError(f"--{side.label.lower()} {side.text!r}: {name} has no knob "
                                 f"{', '.join(map(repr, unknown))}; its knobs are "
                                 f"{', '.join(variant.params) or 'none'}")


def _with_defaults(case: Case, registry) -> Case:
    variant = registry.variants.get(case.variant)
    return case if variant is None else replace(case, params={**variant.params, **case.params})


def _measure_pairs(case: Case, sides: tuple[Side, Side], workers: dict[str, SideWorker], suite: Suite,
                   pairs: int, max_pairs: int, limits: tuple[float, ...], log, progress: Progress,
                   registry) -> PairedCase:
    medians: dict[str, list[float | None]] = {"A": [], "B": []}
    failures: list[str] = []
    contended = 0
    stop = "fixed" if not limits else "cap"
    for pair in range(max_pairs if limits else pairs):
        order = sides if pair % 2 == 0 else sides[::-1]
        for side in order:
            measured = _with_defaults(side.apply(case), registry)
            result = workers[side.label].run(measured, suite.measure)
            log.write(Measurement(case.id, side.label, pair, measured.to_dict(), result).to_json() + "\n")
            log.flush()
            os.fsync(log.fileno())
            ok = result.status == "ok" and result.timing is not None
            medians[side.label].append(result.timing.median_s if ok else None)
            contended += bool(ok and result.timing.contended)
            if not ok:
                failures.append(f"side {side.label} pair {pair + 1}: {result.status}: {result.reason}")
            progress("measured", case=case, side=side.label, pair=pair, result=result)
        if failures:
            break  # a side that fails once is reported, not measured on and on
        if limits and pair + 1 >= pairs and _decided(_ratios(medians), pairs, limits):
            stop = "decided"
            break
    return PairedCase(case=case, a_medians=tuple(m for m in medians["A"] if m is not None),
                      b_medians=tuple(m for m in medians["B"] if m is not None), ratios=_ratios(medians),
                      failures=tuple(dict.fromkeys(failures)), contended=contended, first_look=pairs, stop=stop)


def _ratios(medians: dict[str, list[float | None]]) -> tuple[float, ...]:
    return tuple(b / a for a, b in zip(medians["A"], medians["B"], strict=True)
                 if a is not None and b is not None and a > 0 and b > 0)


def _decided(ratios: tuple[float, ...], first_look: int, limits: tuple[float, ...]) -> bool:
    from attnbench.report.sequential import sequential_interval

    return len(ratios) >= max(2, first_look) and sequential_interval(ratios, first_look).decides(limits)


def _write_summary(path: Path, outcome: ABOutcome) -> None:
    rows = []
    for item in outcome.cases:
        row: dict[str, Any] = {"case_id": item.case.id, "label": item.case.label, "ratios": list(item.ratios),
                               "a_medians_s": list(item.a_medians), "b_medians_s": list(item.b_medians),
                               "failures": list(item.failures), "contended_measurements": item.contended}
        row.update(pairs_measured=len(item.ratios), stop=item.stop)
        interval = item.interval
        if interval is not None:
            row.update(ratio=interval.ratio, low=interval.low, high=interval.high, look_level=interval.level)
        rows.append(row)
    from attnbench.report.sequential import METHOD

    summary = {"a": outcome.side_a.to_dict(), "b": outcome.side_b.to_dict(), "pairs": outcome.pairs,
               "method": f"geometric mean of per-pair ratios B/A; {METHOD}", "cases": rows}
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")

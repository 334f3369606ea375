"""Checks of a suite's tables, keys and values: each raises `SuiteError` naming the file and the key.

`attnbench.plan.suite` parses a suite with these; the axes' own checks come
from their declarations (`attnbench.core.axes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from attnbench.core.axes import AXES
from attnbench.core.errors import SuiteError, did_you_mean
from attnbench.core.knobs import Knob
from attnbench.core.settings import MeasureSettings, settings_field_types
from attnbench.core.taskspec import OPTION_NAMES, TASK_KINDS, parse_task


@dataclass(frozen=True)
class ExtraSweep:
    """One ``[[extra]]`` table: a few more cells for some variants, from [defaults] and its own axis lists only."""

    variants: tuple[str, ...]
    axes: dict[str, tuple[Any, ...]]


@dataclass(frozen=True)
class TaskTable:
    """A suite's [task]: the task text ('none' without one), whether each trained shape is also timed, the rates
    of a ``lr`` list, ``[task.lr_for]``'s variants with their own rates (Zoology tunes the rate per mixer) and
    ``[task.steps_for]``'s with their own step budgets (recurrent mixers need more examples than attention)."""

    text: str = "none"
    costs: bool = True
    lrs: tuple[float, ...] = ()
    lr_for: tuple[tuple[str, tuple[float, ...]], ...] = ()
    steps_for: tuple[tuple[str, int], ...] = ()

    def tasks_for(self, variant: str) -> tuple[str, ...]:
        """The task texts `variant`'s quality cells train: the task at its own step budget from
        ``[task.steps_for]`` (else the task's), once per learning rate of its own ``[task.lr_for]`` (else of
        the ``lr`` list), or once as it is when there is no list."""
        steps = dict(self.steps_for).get(variant)
        task = self.text if steps is None else parse_task(self.text, steps=steps).text
        rates = dict(self.lr_for).get(variant, self.lrs)
        return tuple(parse_task(task, lr=lr).text for lr in rates) if rates else (task,)

    @property
    def own_keys(self) -> tuple[tuple[str, str], ...]:
        """(key, variant) of every per-variant key, ``task.lr_for.NAME`` and ``task.steps_for.NAME``."""
        return (*((f"task.lr_for.{name}", name) for name, _ in self.lr_for),
                *((f"task.steps_for.{name}", name) for name, _ in self.steps_for))


def _learning_rates(source: str, key: str, value: Any) -> tuple[float, ...]:
    """A ``lr`` value: a positive number or a non-empty list of them, as a tuple."""
    rates = tuple(value) if isinstance(value, list) else (value,)
    if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 for r in rates):
        raise SuiteError(f"{source}: key '{key}' must be a positive number or a non-empty list of them "
                         f"(a learning-rate sweep), got {short(value)}")
    return tuple(float(r) for r in rates)


def _step_count(source: str, key: str, value: Any) -> int:
    """A step budget: a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{source}: key '{key}' must be a positive whole number of training steps, got {short(value)}")
    return value


def _per_variant(source: str, name: str, table: Any, wanted: str, read: Callable[[str, str, Any], Any]):
    """``[task.NAME]``: variant = a value `read(source, key, value)` checks, as (variant, value) pairs by name."""
    if not isinstance(table, dict):
        raise SuiteError(f"{source}: key 'task.{name}' must be a table of variant = {wanted}, got {type_name(table)}")
    return tuple(sorted((variant, read(source, f"task.{name}.{variant}", value)) for variant, value in table.items()))


def parse_task_table(source: str, table: dict[str, Any]) -> TaskTable:
    """The [task] table: the canonical task text, whether to add cost cells, the learning rates of a ``lr``
    list (each its own quality cell), the variants' own rates of ``[task.lr_for]`` and their own step
    budgets of ``[task.steps_for]``."""
    if not table:
        return TaskTable()
    own_tables = ("lr_for", "steps_for")
    allowed = ("kind", "costs", *own_tables, *OPTION_NAMES)
    reject_unknown(source, "task.", table, allowed)
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in TASK_KINDS[1:]:
        raise SuiteError(f"{source}: key 'task.kind' must be one of {', '.join(TASK_KINDS[1:])}, got {short(kind)}")
    costs = table.get("costs", True)
    if not isinstance(costs, bool):
        raise SuiteError(f"{source}: key 'task.costs' must be true or false, got {short(costs)}")
    lr_for = _per_variant(source, "lr_for", table.get("lr_for", {}), "rate (or list of rates)", _learning_rates)
    steps_for = _per_variant(source, "steps_for", table.get("steps_for", {}), "steps", _step_count)
    options = {key: value for key, value in table.items() if key not in ("kind", "costs", *own_tables)}
    lrs: tuple[float, ...] = ()
    if isinstance(options.get("lr"), list):
        lrs = _learning_rates(source, "task.lr", options.pop("lr"))
        options["lr"] = lrs[0]
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{source}: key 'task.{key}' must be a number, got {short(value)}")
    try:
        return TaskTable(parse_task(kind, **options).text, costs, lrs, lr_for, steps_for)
    except ValueError as exc:
        raise SuiteError(f"{source}: [task]: {exc}") from None


def parse_extra(source: str, index: int, table: dict[str, Any]) -> ExtraSweep:
    where = f"extra[{index}]"
    names = table.get("variants")
    if not isinstance(names, list) or not names or not all(isinstance(v, str) and v for v in names):
        raise SuiteError(f"{source}: key '{where}.variants' must be a non-empty list of variant names, "
                         f"got {short(names)}")
    lists = {key: value for key, value in table.items() if key != "variants"}
    axes = parse_axis_lists(source, where, lists)
    if "kv_cache_bytes" in axes and "batch" in axes:
        raise SuiteError(f"{source}: key '{where}.batch': kv_cache_bytes derives each cell's batch, so batch "
                         "cannot be swept with it; drop one of the two")
    return ExtraSweep(variants=tuple(dict.fromkeys(names)), axes=axes)


def parse_axis_lists(source: str, prefix: str, table: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    if prefix.startswith("overrides."):
        variant = prefix.removeprefix("overrides.")
        for key in table:
            if key not in AXES.sweep_order():
                raise SuiteError(f"{source}: unknown key '{prefix}.{key}'{did_you_mean(key, AXES.sweep_order())}; "
                                 f"[overrides.{variant}] lists axes ({', '.join(AXES.sweep_order())}); "
                                 f"a variant's knobs go in [params.{variant}]")
    reject_unknown(source, f"{prefix}.", table, AXES.sweep_order())
    lists: dict[str, tuple[Any, ...]] = {}
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{source}: key '{prefix}.{key}' must be a non-empty list of values, got {short(values)}")
        lists[key] = tuple(axis_value(source, f"{prefix}.{key}[{i}]", key, v) for i, v in enumerate(values))
    return lists


def parse_variants(source: str, head: dict[str, Any]) -> tuple[str, ...]:
    if "variants" not in head:
        raise SuiteError(f"{source}: key 'suite.variants' is missing: list variant names, or \"all\"")
    variants = head["variants"]
    if variants == "all":
        return ("all",)
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) and v for v in variants):
        raise SuiteError(f"{source}: key 'suite.variants' must be a non-empty list of variant names or \"all\", "
                         f"got {short(variants)}")
    return tuple(dict.fromkeys(variants))


ZERO_ALLOWED = frozenset({"contention_retries", "contention_backoff_s", "max_gflops"})
"""[measure] keys for which 0 means 'none' (never re-measure, no back-off, no limit)."""


def parse_measure(source: str, table: dict[str, Any]) -> MeasureSettings:
    types = settings_field_types()
    reject_unknown(source, "measure.", table, types)
    values = {}
    for key, value in table.items():
        expected = types[key]
        floor_ok = (lambda v: v >= 0) if key in ZERO_ALLOWED else (lambda v: v > 0)
        ok = isinstance(value, bool) if expected is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and floor_ok(value))
        if expected is int and ok and int(value) != value:
            ok = False
        if not ok:
            sign = "zero or positive" if key in ZERO_ALLOWED else "a positive"
            want = "true or false" if expected is bool else f"{sign} {'integer' if expected is int else 'number'}"
            raise SuiteError(f"{source}: key 'measure.{key}' must be {want}, got {short(value)}")
        values[key] = expected(value)
    if values.get("memory_headroom", 0.5) > 1:
        raise SuiteError(f"{source}: key 'measure.memory_headroom' must be at most 1")
    return MeasureSettings.from_dict(values)


def axis_value(source: str, where: str, axis: str, value: Any) -> Any:
    """A suite's value of `axis`, checked and canonicalised by its declaration (`attnbench.core.axes`)."""
    try:
        return AXES[axis].check(value)
    except ValueError as exc:
        text = str(exc)
        if text.startswith(f"{axis} must "):                       # "heads must be ..." names the key instead
            raise SuiteError(f"{source}: key '{where}' {text.removeprefix(f'{axis} ')}") from None
        raise SuiteError(f"{source}: key '{where}': {text}") from None


def reject_unknown(source: str, prefix: str, table: dict[str, Any], allowed) -> None:
    for key in table:
        if key not in allowed:
            raise SuiteError(f"{source}: unknown key '{prefix}{key}'{did_you_mean(key, allowed)}; "
                             f"allowed: {', '.join(allowed)}")


def type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_knob_values(source: str, variant: str, declared: Mapping[str, Knob],
                       knobs: dict[str, tuple[Any, ...]]) -> None:
    """Every ``[params.<variant>]`` key is a knob of the variant and every value one it accepts."""
    for knob, values in knobs.items():
        if knob not in declared:
            raise SuiteError(f"{source}: key 'params.{variant}.{knob}': variant {variant!r} has no knob "
                             f"{knob!r}{did_you_mean(knob, declared)}; its knobs: {', '.join(declared) or 'none'}")
        spec = declared[knob]
        for i, value in enumerate(values):
            if not spec.accepts(value):
                where = f"params.{variant}.{knob}" + (f"[{i}]" if len(values) > 1 else "")
                about = f" ({spec.doc})" if spec.doc else ""
                raise SuiteError(f"{source}: key '{where}' must be {spec.expected}, got {short(value)}: the knob "
                                 f"{knob} of variant {variant!r}{about}, default {spec.default!r}")

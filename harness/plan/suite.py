"""Suites: TOML files that say which cells to run, expanded as a cartesian product.

A suite file has these tables (every key optional but ``variants``)::

    [suite]
    name = "quick"
    description = "..."
    variants = ["naive", "sdpa-flash"]   # or "all": every registered variant

    [defaults]          # one value per axis, used where [sweep] does not list it
    batch = 1
    heads = 8
    head_dim = 64
    dtype = "float32"
    causal = false
    mode = "fwd"
    device = "cpu"
    seed = 0
    qk_std = 1.0

    [sweep]             # lists of values; every combination is a cell
    seq_len = [256, 1024, 4096]
    causal = [false, true]

    [params.performer]  # a variant's knobs: a value or a list to sweep
    features = [64, 256]

    [overrides.additive]  # a variant's own lists for some axes, replacing [sweep]'s
    seq_len = [256, 1024]

    [measure]           # harness.settings.MeasureSettings
    budget_s = 1.0

Suites are data: nothing in them is evaluated. Every mistake raises
`SuiteError` naming the file and the key.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from harness.core.case import DEVICES, MODES, Case, canonical_dtype
from harness.core.errors import SuiteError, did_you_mean
from harness.core.knobs import Knob
from harness.core.maskspec import parse_mask
from harness.core.scoremodspec import parse_score_mod
from harness.core.settings import MeasureSettings, settings_field_types

AXES: dict[str, type] = {
    "seq_len": int, "kv_len": int, "batch": int, "heads": int, "kv_heads": int, "head_dim": int,
    "v_head_dim": int, "mask": str, "score_mod": str, "dtype": str, "causal": bool, "mode": str, "device": str, "seed": int, "qk_std": float,
}
AXIS_ORDER = ("device", "dtype", "mode", "causal", "mask", "score_mod", "batch", "heads", "kv_heads", "head_dim", "v_head_dim",
              "seed", "qk_std", "kv_len", "seq_len")
TABLES = ("suite", "defaults", "sweep", "params", "overrides", "measure")
SUITE_KEYS = ("name", "description", "variants")
MAX_CELLS = 100_000
MAX_SIZE = 1 << 40


@dataclass(frozen=True)
class Suite:
    """A loaded suite: where it came from, its text, and what it asks for."""

    name: str
    source: str
    text: str
    description: str
    variants: tuple[str, ...]
    defaults: dict[str, Any]
    sweep: dict[str, tuple[Any, ...]]
    params: dict[str, dict[str, tuple[Any, ...]]]
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    overrides: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)


def builtin_suite_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("suites").iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name (``quick``) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SuiteError(f"suite file {path} does not exist; built-in suites: {', '.join(builtin_suite_names())}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SuiteError(f"suite file {path} cannot be read: {exc}") from None
        return parse_suite(text, source=str(path))
    builtin = resources.files("suites") / f"{name_or_path}.toml"
    if not builtin.is_file():
        names = builtin_suite_names()
        raise SuiteError(f"no built-in suite {name_or_path!r}{did_you_mean(name_or_path, names)}; "
                         f"built-in suites: {', '.join(names)}; or give a path to a .toml file")
    return parse_suite(builtin.read_text(encoding="utf-8"), source=f"builtin:{name_or_path}")


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    """Parse and validate suite TOML. Raises SuiteError naming `source` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{source}: not valid TOML: {exc}") from None
    _reject_unknown(source, "", data, TABLES)
    tables = {}
    for name in TABLES:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise SuiteError(f"{source}: [{name}] must be a table, got {_type_name(table)}")
        tables[name] = table
    head = tables["suite"]
    _reject_unknown(source, "suite.", head, SUITE_KEYS)
    suite_name = head.get("name", Path(source.split(":")[-1]).stem)
    if not isinstance(suite_name, str) or not suite_name:
        raise SuiteError(f"{source}: key 'suite.name' must be a non-empty string")
    description = head.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"{source}: key 'suite.description' must be a string")
    variants = _parse_variants(source, head)

    _reject_unknown(source, "defaults.", tables["defaults"], AXES)
    defaults = {key: _axis_value(source, f"defaults.{key}", key, value) for key, value in tables["defaults"].items()}
    sweep = _parse_axis_lists(source, "sweep", tables["sweep"])
    overrides: dict[str, dict[str, tuple[Any, ...]]] = {}
    for variant, table in tables["overrides"].items():
        if not isinstance(table, dict):
            raise SuiteError(f"{source}: key 'overrides.{variant}' must be a table of axis lists, got {_short(table)}")
        overrides[variant] = _parse_axis_lists(source, f"overrides.{variant}", table)
    if "seq_len" not in sweep and "seq_len" not in defaults:
        raise SuiteError(f"{source}: no sequence length: set 'sweep.seq_len' (a list) or 'defaults.seq_len'")

    params: dict[str, dict[str, tuple[Any, ...]]] = {}
    for variant, knobs in tables["params"].items():
        if not isinstance(knobs, dict):
            raise SuiteError(f"{source}: key 'params.{variant}' must be a table of knobs, got {_short(knobs)}")
        params[variant] = {}
        for knob, values in knobs.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise SuiteError(f"{source}: key 'params.{variant}.{knob}' is an empty list")
            for i, value in enumerate(values):
                if not isinstance(value, (int, float, str, bool)):
                    raise SuiteError(f"{source}: key 'params.{variant}.{knob}[{i}]' must be a number, string or "
                                     f"boolean, got {_type_name(value)}")
            params[variant][knob] = tuple(values)

    measure = _parse_measure(source, tables["measure"])
    return Suite(name=suite_name, source=source, text=text, description=description, variants=variants,
                 defaults=defaults, sweep=sweep, params=params, measure=measure, overrides=overrides)


def _parse_axis_lists(source: str, prefix: str, table: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    if prefix.startswith("overrides."):
        variant = prefix.removeprefix("overrides.")
        for key in table:
            if key not in AXES:
                raise SuiteError(f"{source}: unknown key '{prefix}.{key}'{did_you_mean(key, AXES)}; "
                                 f"[overrides.{variant}] lists axes ({', '.join(AXES)}); "
                                 f"a variant's knobs go in [params.{variant}]")
    _reject_unknown(source, f"{prefix}.", table, AXES)
    lists: dict[str, tuple[Any, ...]] = {}
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{source}: key '{prefix}.{key}' must be a non-empty list of values, got {_short(values)}")
        lists[key] = tuple(_axis_value(source, f"{prefix}.{key}[{i}]", key, v) for i, v in enumerate(values))
    return lists


def _parse_variants(source: str, head: dict[str, Any]) -> tuple[str, ...]:
    if "variants" not in head:
        raise SuiteError(f"{source}: key 'suite.variants' is missing: list variant names, or \"all\"")
    variants = head["variants"]
    if variants == "all":
        return ("all",)
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) and v for v in variants):
        raise SuiteError(f"{source}: key 'suite.variants' must be a non-empty list of variant names or \"all\", "
                         f"got {_short(variants)}")
    return tuple(dict.fromkeys(variants))


ZERO_ALLOWED = frozenset({"contention_retries", "contention_backoff_s"})
"""[measure] keys for which 0 means 'none' (never re-measure, no back-off)."""


def _parse_measure(source: str, table: dict[str, Any]) -> MeasureSettings:
    types = settings_field_types()
    _reject_unknown(source, "measure.", table, types)
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
            raise SuiteError(f"{source}: key 'measure.{key}' must be {want}, got {_short(value)}")
        values[key] = expected(value)
    if values.get("memory_headroom", 0.5) > 1:
        raise SuiteError(f"{source}: key 'measure.memory_headroom' must be at most 1")
    return MeasureSettings.from_dict(values)


def _axis_value(source: str, where: str, axis: str, value: Any) -> Any:
    expected = AXES[axis]
    if expected is bool:
        if not isinstance(value, bool):
            raise SuiteError(f"{source}: key '{where}' must be true or false, got {_short(value)}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SuiteError(f"{source}: key '{where}' must be an integer, got {_short(value)}")
        if axis != "seed" and not 0 < value <= MAX_SIZE:
            raise SuiteError(f"{source}: key '{where}' must be a positive integer, got {value}")
        if axis == "seed" and value < 0:
            raise SuiteError(f"{source}: key '{where}' must be zero or positive, got {value}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
            raise SuiteError(f"{source}: key '{where}' must be a positive number, got {_short(value)}")
        return float(value)
    if not isinstance(value, str):
        raise SuiteError(f"{source}: key '{where}' must be a string, got {_short(value)}")
    if axis == "dtype":
        try:
            return canonical_dtype(value)
        except ValueError as exc:
            raise SuiteError(f"{source}: key '{where}': {exc}") from None
    if axis in ("mask", "score_mod"):
        try:
            return (parse_mask if axis == "mask" else parse_score_mod)(value).text
        except ValueError as exc:
            raise SuiteError(f"{source}: key '{where}': {exc}") from None
    allowed = {"mode": MODES, "device": DEVICES}[axis]
    if value not in allowed:
        raise SuiteError(f"{source}: key '{where}' must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _reject_unknown(source: str, prefix: str, table: dict[str, Any], allowed) -> None:
    for key in table:
        if key not in allowed:
            raise SuiteError(f"{source}: unknown key '{prefix}{key}'{did_you_mean(key, allowed)}; "
                             f"allowed: {', '.join(allowed)}")


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def with_overrides(suite: Suite, *, variants=None, seq_lens=None, device=None) -> Suite:
    """The suite with the CLI's --variant, --seq-len and --device applied."""
    changes: dict[str, Any] = {}
    params, overrides = dict(suite.params), {k: dict(v) for k, v in suite.overrides.items()}
    if variants:
        changes["variants"] = tuple(dict.fromkeys(variants))
        params = {k: v for k, v in params.items() if k in variants}
        overrides = {k: v for k, v in overrides.items() if k in variants}
    sweep = dict(suite.sweep)
    defaults = dict(suite.defaults)
    if seq_lens:
        for value in seq_lens:
            if value <= 0:
                raise SuiteError(f"--seq-len must be positive, got {value}")
        sweep["seq_len"] = tuple(seq_lens)
        for table in overrides.values():
            table.pop("seq_len", None)
    if device:
        sweep.pop("device", None)
        defaults["device"] = device
        for table in overrides.values():
            table.pop("device", None)
    return replace(suite, sweep=sweep, defaults=defaults, params=params, overrides=overrides, **changes)


def _variant_axes(suite: Suite, name: str) -> dict[str, tuple[Any, ...]]:
    sweep = {**suite.sweep, **suite.overrides.get(name, {})}
    axes = {axis: sweep.get(axis, (suite.defaults[axis],) if axis in suite.defaults else (None,))
            for axis in AXIS_ORDER}
    axes["seq_len"] = tuple(sorted(axes["seq_len"]))
    return axes


def expand(suite: Suite, registry) -> list[Case]:
    """Every cell of the suite, lengths innermost (ascending), knob defaults filled in."""
    names = registry.names() if suite.variants == ("all",) else list(suite.variants)
    for name in names:
        if name not in registry.variants:
            registry.get(name)
    for name in suite.overrides:
        if name not in names:
            raise SuiteError(f"{suite.source}: key 'overrides.{name}' names a variant the suite does not run "
                             f"(variants: {', '.join(names)})")
    for name, knobs in suite.params.items():
        if name not in names:
            raise SuiteError(f"{suite.source}: key 'params.{name}' names a variant the suite does not run "
                             f"(variants: {', '.join(names)})")
        _check_knob_values(suite.source, name, registry.get(name).knobs, knobs)
    cases: list[Case] = []
    planned = 0
    for name in names:
        variant = registry.get(name)
        axes = _variant_axes(suite, name)
        total = math.prod(len(values) for values in axes.values())
        given = suite.params.get(name, {})
        knob_lists = {knob: tuple(declared.coerce(v) for v in given[knob]) if knob in given else (declared.default,)
                      for knob, declared in variant.knobs.items()}
        knob_combos = [dict(zip(knob_lists, combo, strict=True)) for combo in itertools.product(*knob_lists.values())]
        planned += total * len(knob_combos)
        if planned > MAX_CELLS:
            raise SuiteError(f"{suite.source}: the suite expands to more than {MAX_CELLS} cells; sweep fewer values")
        for knobs in knob_combos:
            for combo in itertools.product(*axes.values()):
                fields = {axis: value for axis, value in zip(AXIS_ORDER, combo, strict=True) if value is not None}
                try:
                    cases.append(Case(variant=name, params=knobs, **fields))
                except ValueError as exc:
                    raise SuiteError(f"{suite.source}: a cell of variant {name!r} is invalid: {exc}") from None
    return cases


def _check_knob_values(source: str, variant: str, declared: Mapping[str, Knob],
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
                raise SuiteError(f"{source}: key '{where}' must be {spec.expected}, got {_short(value)}: the knob "
                                 f"{knob} of variant {variant!r}{about}, default {spec.default!r}")

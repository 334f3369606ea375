"""Suites: TOML files that say which cells to run, expanded as a cartesian product.

A suite file has these tables (every key optional but ``variants``)::

    [suite]
    name = "quick"
    description = "..."
    variants = ["naive", "sdpa-flash"]   # or "all": every registered variant

    [defaults]          # one value per axis, used where [sweep] does not list it
    preset = "llama3-8b"  # optional: heads, kv_heads, head_dim, v_head_dim, causal, mask of a model
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

    [[extra]]           # more cells for some variants: [defaults] and these lists only
    variants = ["sdpa-flash"]
    seq_len = [1]
    kv_len = [4096]
    causal = [true]

    [measure]           # attnbench.core.settings.MeasureSettings
    budget_s = 1.0

    [task]              # optional: make every cell a quality cell (attnbench.core.taskspec)
    kind = "mqar"
    kv_pairs = 4
    steps = 600
    lr = [3e-3, 1e-2]   # a number, or a list: one quality cell per rate (the report keeps the best)
    costs = true        # also time each trained shape as a kernel cell (the quality-cost picture)

    [task.lr_for]       # a variant's own rate (or list), in place of task.lr for its cells
    deltanet = 3e-3

    [task.steps_for]    # a variant's own step budget, in place of task.steps for its cells
    mamba2-ssd = 3000

A ``preset`` (`attnbench.core.presets`; in [defaults] or swept in [sweep])
fills heads, kv_heads, head_dim, v_head_dim, causal and mask, except the axes
the suite sets itself in [defaults], [sweep] or the variant's [overrides]:
what a suite says wins over the preset (and a head_dim the suite sets is the
v_head_dim too, unless it sets that as well). ``kv_cache_bytes`` (an integer or
text such as ``"256MiB"``) derives each cell's batch from the size of its KV
cache, so it cannot be swept together with ``batch``.

Suites are data: nothing in them is evaluated. Every mistake raises
`SuiteError` naming the file and the key.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from attnbench.core.axes import AXES
from attnbench.core.case import Case, batch_for_kv_cache
from attnbench.core.errors import SuiteError, did_you_mean
from attnbench.core.presets import get_preset
from attnbench.core.settings import MeasureSettings
from attnbench.core.taskspec import parse_task
from attnbench.kinds.inputs import INPUTS
from attnbench.plan.checks import (
    ExtraSweep,
    TaskTable,
    axis_value,
    check_knob_values,
    parse_axis_lists,
    parse_extra,
    parse_measure,
    parse_task_table,
    parse_variants,
    reject_unknown,
    short,
    type_name,
)

TABLES = ("suite", "defaults", "sweep", "params", "overrides", "extra", "measure", "task")
SUITE_KEYS = ("name", "description", "variants")
MAX_CELLS = 100_000


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
    extra: tuple[ExtraSweep, ...] = ()
    task: TaskTable = field(default_factory=TaskTable)

    @property
    def is_quality(self) -> bool:
        """True when the suite trains a task ([task]): its cells are quality cells."""
        return self.task.text != "none"


def builtin_suite_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("attnbench.suites").iterdir() if p.name.endswith(".toml"))


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
    builtin = resources.files("attnbench.suites") / f"{name_or_path}.toml"
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
    reject_unknown(source, "", data, TABLES)
    tables = {}
    for name in TABLES:
        table = data.get(name, [] if name == "extra" else {})
        if name == "extra":
            if not isinstance(table, list) or not all(isinstance(t, dict) for t in table):
                raise SuiteError(f"{source}: 'extra' must be an array of tables ([[extra]]), got {type_name(table)}")
        elif not isinstance(table, dict):
            raise SuiteError(f"{source}: [{name}] must be a table, got {type_name(table)}")
        tables[name] = table
    head = tables["suite"]
    reject_unknown(source, "suite.", head, SUITE_KEYS)
    suite_name = head.get("name", Path(source.split(":")[-1]).stem)
    if not isinstance(suite_name, str) or not suite_name:
        raise SuiteError(f"{source}: key 'suite.name' must be a non-empty string")
    description = head.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"{source}: key 'suite.description' must be a string")
    variants = parse_variants(source, head)

    reject_unknown(source, "defaults.", tables["defaults"], AXES.sweep_order())
    defaults = {key: axis_value(source, f"defaults.{key}", key, value) for key, value in tables["defaults"].items()}
    sweep = parse_axis_lists(source, "sweep", tables["sweep"])
    overrides: dict[str, dict[str, tuple[Any, ...]]] = {}
    for variant, table in tables["overrides"].items():
        if not isinstance(table, dict):
            raise SuiteError(f"{source}: key 'overrides.{variant}' must be a table of axis lists, got {short(table)}")
        overrides[variant] = parse_axis_lists(source, f"overrides.{variant}", table)
    for where, table in [("sweep", sweep), *((f"overrides.{v}", t) for v, t in overrides.items())]:
        if "kv_cache_bytes" in {**sweep, **table} and "batch" in table:
            raise SuiteError(f"{source}: key '{where}.batch': kv_cache_bytes derives each cell's batch, so batch "
                             "cannot be swept with it; drop one of the two")
    from_files = any(str(v).startswith("file:") for v in (*sweep.get("inputs", ()), defaults.get("inputs", "")))
    if "seq_len" not in sweep and "seq_len" not in defaults and not from_files:
        raise SuiteError(f"{source}: no sequence length: set 'sweep.seq_len' (a list) or 'defaults.seq_len'")

    params: dict[str, dict[str, tuple[Any, ...]]] = {}
    for variant, knobs in tables["params"].items():
        if not isinstance(knobs, dict):
            raise SuiteError(f"{source}: key 'params.{variant}' must be a table of knobs, got {short(knobs)}")
        params[variant] = {}
        for knob, values in knobs.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise SuiteError(f"{source}: key 'params.{variant}.{knob}' is an empty list")
            for i, value in enumerate(values):
                if not isinstance(value, (int, float, str, bool)):
                    raise SuiteError(f"{source}: key 'params.{variant}.{knob}[{i}]' must be a number, string or "
                                     f"boolean, got {type_name(value)}")
            params[variant][knob] = tuple(values)

    extra = tuple(parse_extra(source, i, table) for i, table in enumerate(tables["extra"]))
    measure = parse_measure(source, tables["measure"])
    task = parse_task_table(source, tables["task"])
    unknown = [key for key, name in task.own_keys if name not in variants and variants != ("all",)]
    if unknown:
        raise SuiteError(f"{source}: key '{unknown[0]}' names a variant the suite does not list "
                         f"(its variants: {', '.join(variants)}); add it to [suite] variants or drop the key")
    return Suite(name=suite_name, source=source, text=text, description=description, variants=variants,
                 defaults=defaults, sweep=sweep, params=params, measure=measure, overrides=overrides, extra=extra,
                 task=task)


def with_overrides(suite: Suite, *, variants=None, seq_lens=None, device=None, preset=None, steps=None,
                   seeds=None) -> Suite:
    """The suite with the CLI's --variant, --seq-len, --device, --preset, --steps and --seeds applied.

    --preset replaces the suite's preset and its [defaults] for the axes the
    preset fills; axes the suite sweeps keep their lists. --steps replaces the
    task's step budget and --seeds K trains every quality cell with seeds
    0..K-1 (both only for a suite with a [task]).
    """
    changes: dict[str, Any] = {}
    if (steps or seeds) and not suite.is_quality:
        raise SuiteError(f"{suite.source}: --steps and --seeds apply to a suite with a [task] table "
                         "(attnbench quality); this suite has none")
    if steps:
        try:
            # --steps is every cell's budget: the variants' own budgets go
            changes["task"] = replace(suite.task, text=parse_task(suite.task.text, steps=steps).text, steps_for=())
        except ValueError as exc:
            raise SuiteError(f"--steps: {exc}") from None
    params, overrides = dict(suite.params), {k: dict(v) for k, v in suite.overrides.items()}
    if variants:
        changes["variants"] = tuple(dict.fromkeys(variants))
        params = {k: v for k, v in params.items() if k in variants}
        overrides = {k: v for k, v in overrides.items() if k in variants}
    sweep = dict(suite.sweep)
    defaults = dict(suite.defaults)
    if seeds:
        if seeds < 1:
            raise SuiteError(f"--seeds must be at least 1, got {seeds}")
        sweep["seed"] = tuple(range(seeds))
        defaults.pop("seed", None)
        for table in overrides.values():
            table.pop("seed", None)
    if seq_lens:
        for value in seq_lens:
            if value <= 0:
                raise SuiteError(f"--seq-len must be positive, got {value}")
        sweep["seq_len"] = tuple(seq_lens)
        for table in overrides.values():
            table.pop("seq_len", None)
    if preset:
        try:
            chosen = get_preset(preset)
        except ValueError as exc:
            raise SuiteError(f"--preset: {exc}") from None
        sweep.pop("preset", None)
        for table in overrides.values():
            table.pop("preset", None)
        for axis in chosen.fields():
            defaults.pop(axis, None)
        defaults["preset"] = chosen.name
    if device:
        sweep.pop("device", None)
        defaults["device"] = device
        for table in overrides.values():
            table.pop("device", None)
    extra = []
    for block in suite.extra:
        names = tuple(v for v in block.variants if not variants or v in variants)
        axes = dict(block.axes)
        if seq_lens:
            axes["seq_len"] = tuple(seq_lens)
        if device:
            axes.pop("device", None)
        if preset:
            axes.pop("preset", None)
        if seeds:
            axes["seed"] = tuple(range(seeds))
        if names:
            extra.append(ExtraSweep(variants=names, axes=axes))
    return replace(suite, sweep=sweep, defaults=defaults, params=params, overrides=overrides, extra=tuple(extra),
                   **changes)


def _variant_axes(suite: Suite, name: str) -> dict[str, tuple[Any, ...]]:
    return _axes(suite.defaults, {**suite.sweep, **suite.overrides.get(name, {})})


def _axes(defaults: dict[str, Any], lists: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    axes = {axis: lists.get(axis, (defaults[axis],) if axis in defaults else (None,)) for axis in AXES.sweep_order()}
    axes["seq_len"] = tuple(sorted(axes["seq_len"]))
    return axes


def expand(suite: Suite, registry) -> list[Case]:
    """Every cell of the suite, lengths innermost (ascending), knob defaults filled in; then each [[extra]]'s cells.

    With a [task], every cell is a quality cell of that task; with
    ``task.costs`` (the default) each distinct trained shape is followed by
    its kernel cell (the same case with task none and seed 0), which times
    the variant's training call on exactly the model's shapes.
    """
    cases = _expand_cells(suite, registry)
    if not suite.is_quality:
        return cases
    quality = [replace(case, task=task) for case in cases for task in suite.task.tasks_for(case.variant)]
    if not suite.task.costs:
        return quality
    costs = {}
    for case in quality:
        cost = replace(case, task="none", seed=0)
        costs.setdefault(cost.id, cost)
    return quality + list(costs.values())


def _expand_cells(suite: Suite, registry) -> list[Case]:
    names = registry.names() if suite.variants == ("all",) else list(suite.variants)
    for name in names:
        if name not in registry.variants:
            registry.get(name)
    for name in suite.overrides:
        if name not in names:
            raise SuiteError(f"{suite.source}: key 'overrides.{name}' names a variant the suite does not run "
                             f"(variants: {', '.join(names)})")
    for i, block in enumerate(suite.extra):
        for name in block.variants:
            if name not in names:
                raise SuiteError(f"{suite.source}: key 'extra[{i}].variants' names {name!r}, a variant the suite "
                                 f"does not run (variants: {', '.join(names)})")
    for name, knobs in suite.params.items():
        if name not in names:
            raise SuiteError(f"{suite.source}: key 'params.{name}' names a variant the suite does not run "
                             f"(variants: {', '.join(names)})")
        check_knob_values(suite.source, name, registry.get(name).knobs, knobs)
    plans = [(name, _variant_axes(suite, name),
              set(suite.defaults) | set(suite.sweep) | set(suite.overrides.get(name, {}))) for name in names]
    plans += [(name, _axes(suite.defaults, block.axes), set(suite.defaults) | set(block.axes))
              for block in suite.extra for name in block.variants]
    cases: dict[str, Case] = {}
    planned = 0
    for name, axes, explicit in plans:
        variant = registry.get(name)
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
                fields = {axis: value for axis, value in zip(axes, combo, strict=True) if value is not None}
                try:
                    case = _case(name, knobs, _derived_fields(fields, explicit))
                except ValueError as exc:
                    raise SuiteError(f"{suite.source}: a cell of variant {name!r} is invalid: {exc}") from None
                cases.setdefault(case.id, case)
    return list(cases.values())


def _case(variant: str, knobs: dict[str, Any], fields: dict[str, Any]) -> Case:
    """The Case of one combination: built-in axes as fields, registered ones in `extra_axes`."""
    extra = {axis: value for axis, value in fields.items() if axis not in AXES.builtin}
    builtin = {axis: value for axis, value in fields.items() if axis in AXES.builtin}
    return Case(variant=variant, params=knobs, extra_axes=extra, **builtin)


def _derived_fields(fields: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """A cell's Case fields: its preset's shape where the suite set no value, and the batch its KV cache holds."""
    fields = dict(fields)
    preset = fields.pop("preset", None)
    if preset is not None:
        for axis, value in get_preset(preset).fields().items():
            follows_head_dim = axis == "v_head_dim" and "head_dim" in explicit
            if axis not in explicit and not follows_head_dim:
                fields[axis] = value
    inputs = fields.get("inputs")
    chosen = INPUTS.parse(inputs) if inputs is not None else None
    if chosen is not None and chosen.kind.reads_file:
        fields = _fields_from_file(chosen.arg, fields, explicit)
    if fields.get("kv_cache_bytes") is not None:
        shape = Case(variant="-", **{k: v for k, v in fields.items() if k != "kv_cache_bytes" and k in AXES.builtin})
        fields["batch"] = batch_for_kv_cache(fields["kv_cache_bytes"], shape)
    return fields


def _fields_from_file(path: str, fields: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Shape fields (and causal) taken from a safetensors file where the suite set none; ValueError where they disagree."""
    from attnbench.measure.input_files import SHAPE_FIELDS, read_file_shapes

    shapes = read_file_shapes(path)
    fields = dict(fields)
    wrong = []
    for name in SHAPE_FIELDS:
        if name in explicit and fields.get(name) is not None:
            if fields[name] != shapes[name]:
                wrong.append(f"{name} is {fields[name]} but the file has {shapes[name]}")
        else:
            fields[name] = shapes[name]
    if "causal" not in explicit and shapes.get("causal") is not None:
        fields["causal"] = shapes["causal"]
    if wrong:
        raise ValueError(f"inputs file:{path} does not match the suite: {'; '.join(wrong)}; drop those keys "
                         "to take them from the file")
    return fields

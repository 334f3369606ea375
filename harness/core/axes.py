"""Every workload axis, declared once: name, type, default, parser, label, CLI flag, support and grouping.

A `Case` validates and labels its values from here; a suite's [defaults],
[sweep], [overrides] and [[extra]] accept exactly these axes and expand them
in this order (the lengths innermost); `attnbench profile` offers a flag per
axis that names one; the tidy frame has a column per case axis; the report
groups cells into workloads by the axes that say so; a trained
configuration (quality cells) is every case axis but the task and the seed.

A plugin (or a test) adds an axis with `AXES.register(Axis(...))`: a case
then carries its value in `Case.extra_axes`, and a variant declares that it
takes non-default values with the attribute named in `supported_by`.

Pure Python: the store and the report read it without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnbench.core.declared import Declarations
from attnbench.core.taskspec import TASK_HELP, parse_task
from attnbench.core.units import parse_bytes
from attnbench.kinds.inputs import INPUTS
from attnbench.kinds.lengths import LAYOUTS, LENGTHS
from attnbench.kinds.masks import MASKS
from attnbench.kinds.score_mods import SCORE_MODS

DTYPES = ("float32", "float16", "bfloat16", "float64")
DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "fp64": "float64", "double": "float64", "f64": "float64",
}
MODES = ("fwd", "fwd_bwd")
SINKS = ("none", "learned")
DEVICES = ("cpu", "cuda")
MAX_SIZE = 1 << 40


def canonical_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16'; raises ValueError for a name that is not a dtype."""
    resolved = DTYPE_ALIASES.get(str(name).lower(), str(name).lower())
    if resolved not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: expected one of {', '.join(DTYPES)} (or fp32, fp16, bf16, fp64)")
    return resolved


@dataclass(frozen=True)
class Axis:
    """One workload axis.

    name: the Case field, suite key and tidy column; kind: int, float, bool
    or str; default: the value a case has when it does not set it (None:
    unset, or `defaults_from`'s value); defaults_from: the axis whose value
    it takes by default (kv_len from seq_len); doc: one line for help texts;
    parse: canonicalises a value (text such as ``softcap:50``), raising
    ValueError that says what is accepted; minimum: the least integer or
    number it takes; choices: the only values it takes; label: the text the
    case label adds for a non-default value; flag: the ``attnbench profile``
    option, or None; supported_by: the variant attribute that declares
    support for its non-default values; groups_reports: the report splits
    workloads by it; shown_when_set: the report names it in a workload's
    title even when it does not vary, with `title_prefix` before a kind's
    text (``inputs outliers``); outermost: expanded outermost (the
    preset and the KV-cache size, which derive other axes); innermost:
    expanded innermost (the lengths, so an OOM at N skips larger N); in_case: False for an axis that
    only a suite has (a preset fills other axes); in_suite: False for one a
    suite sets elsewhere (the task, from [task]); trained: part of a quality
    cell's trained configuration; required: a case must give it (no default).
    """

    name: str
    kind: type
    default: Any
    doc: str
    defaults_from: str | None = None
    parse: Callable[[Any], Any] | None = None
    minimum: float | None = None
    choices: tuple[Any, ...] = ()
    label: Callable[[Any], str] | None = None
    flag: str | None = None
    supported_by: str | None = None
    groups_reports: bool = False
    shown_when_set: bool = False
    title_prefix: str = ""
    outermost: bool = False
    innermost: bool = False
    in_case: bool = True
    in_suite: bool = True
    trained: bool = True
    required: bool = False

    def check(self, value: Any) -> Any:
        """`value` canonicalised; ValueError naming the axis and what it takes."""
        if value is None and (self.default is None or self.defaults_from):
            return None
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
        elif self.kind is int and self.parse is None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{self.name} must be a number, got {value!r}")
            value = float(value)
        elif self.kind is str and self.parse is None and not isinstance(value, str):
            raise ValueError(f"{self.name} must be a string, got {value!r}")
        if self.parse is not None:
            value = self.parse(value)
        if self.minimum is not None and not value >= self.minimum:
            least = "a positive" if self.minimum > 0 else "a non-negative"
            noun = "integer" if self.kind is int else "number"
            raise ValueError(f"{self.name} must be {least} {noun}, got {value!r}")
        if self.kind in (int, float) and value > MAX_SIZE:
            raise ValueError(f"{self.name} must be at most {MAX_SIZE}, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value

    def label_part(self, value: Any) -> str:
        """What a case label adds for `value`: '' at the default or without a `label`."""
        if self.label is None or value == self.default:
            return ""
        return self.label(value)


class AxisRegistry(Declarations[Axis]):
    """The declared axes, in the order of the tidy columns and the report's titles; `register` adds one."""

    what = "axis"

    def case_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self if a.in_case)

    def extra(self) -> tuple[Axis, ...]:
        """The axes registered after the built-ins: a case keeps their values in `Case.extra_axes`."""
        return tuple(a for a in self if a.name not in self.builtin)

    def sweep_order(self) -> tuple[str, ...]:
        """The axes a suite sets, in the order it expands them: the innermost (the lengths) last."""
        suite = [a for a in self if a.in_suite]
        return tuple(a.name for group in ([a for a in suite if a.outermost],
                                          [a for a in suite if not (a.outermost or a.innermost)],
                                          [a for a in suite if a.innermost]) for a in group)

    def kind_axes(self) -> tuple[str, ...]:
        """The case axes whose values are kinds (``sliding_window:256``, ``alibi``): titles name them when set."""
        return tuple(a.name for a in self.case_axes() if a.kind is str and a.shown_when_set)

    def trained(self) -> tuple[str, ...]:
        """The case axes of a trained configuration: every one but the task and the seed."""
        return tuple(a.name for a in self.case_axes() if a.trained)


def value_of(case: dict[str, Any], name: str) -> Any:
    """A stored case's value of axis `name` (a built-in field or one of `extra_axes`), defaults filled in."""
    axis = AXES[name]
    value = case.get(name, (case.get("extra_axes") or {}).get(name))
    if value is None and axis.defaults_from:
        return value_of(case, axis.defaults_from)
    return axis.default if value is None else value


def _bytes(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"kv_cache_bytes must be a positive size, got {value!r}")
    return parse_bytes(value)


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"qk_std must be positive, got {value!r}")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"page_shuffle must be a fraction from 0 to 1 (the share of pages out of order), got {value!r}")
    return value


def _preset(value: Any) -> str:
    from attnbench.core.presets import get_preset

    if not isinstance(value, str):
        raise ValueError(f"preset must be a preset's name, got {value!r}")
    return get_preset(value).name


AXES = AxisRegistry((
    Axis("preset", str, None, "a model's heads, kv_heads, head dims, causal and mask", parse=_preset,
         flag="--preset", outermost=True, in_case=False, trained=False),
    Axis("device", str, "cpu", "where the cell runs", choices=DEVICES, flag="--device", groups_reports=True),
    Axis("dtype", str, "float32", f"one of {', '.join(DTYPES)} (or fp32, bf16...)", parse=canonical_dtype,
         flag="--dtype", groups_reports=True),
    Axis("mode", str, "fwd", "fwd, or fwd_bwd (the backward of the output too)", choices=MODES, flag="--mode",
         groups_reports=True),
    Axis("causal", bool, False, "causal mask (aligned at the end of the keys)", flag="--causal",
         supported_by="supports_causal", groups_reports=True),
    Axis("mask", str, "none", MASKS.help, parse=MASKS.canonical, label=lambda v: MASKS.parse(v).label, flag="--mask",
         supported_by="supported_masks", groups_reports=True, shown_when_set=True),
    Axis("score_mod", str, "none", SCORE_MODS.help, parse=SCORE_MODS.canonical,
         label=lambda v: SCORE_MODS.parse(v).label, flag="--score-mod", supported_by="supported_score_mods",
         groups_reports=True, shown_when_set=True),
    Axis("sinks", str, "none", "attention sinks: none, or learned (one seeded logit per head joins every "
         "softmax denominator, as gpt-oss's)", choices=SINKS, label=lambda v: "sinks", flag="--sinks",
         supported_by="supports_sinks", groups_reports=True, shown_when_set=True),
    Axis("inputs", str, "iid", INPUTS.help, parse=INPUTS.canonical, label=lambda v: INPUTS.parse(v).label,
         flag="--inputs", groups_reports=True, shown_when_set=True, title_prefix="inputs "),
    Axis("batch", int, 1, "sequences per call", minimum=1, flag="--batch", groups_reports=True),
    Axis("kv_cache_bytes", int, None, "bytes of the KV cache; the batch is derived from it", parse=_bytes,
         minimum=1, label=lambda v: f"cache{v}", shown_when_set=True, groups_reports=True,
         outermost=True),
    Axis("heads", int, 8, "query heads", minimum=1, flag="--heads", groups_reports=True),
    Axis("kv_heads", int, None, "key/value heads (GQA/MQA; must divide heads)", defaults_from="heads", minimum=1,
         flag="--kv-heads", supported_by="supports_gqa", groups_reports=True, shown_when_set=True),
    Axis("head_dim", int, 64, "query/key head dim", minimum=1, flag="--head-dim", groups_reports=True),
    Axis("v_head_dim", int, None, "value and output head dim", defaults_from="head_dim", minimum=1,
         flag="--v-head-dim", supported_by="supports_v_head_dim", groups_reports=True, shown_when_set=True),
    Axis("seed", int, 0, "seeds every random draw of the cell", minimum=0, flag="--seed", trained=False),
    Axis("qk_std", float, 1.0, "q and k are drawn from N(0, qk_std²)", parse=_positive, groups_reports=True),
    Axis("task", str, "none", TASK_HELP, parse=lambda v: parse_task(v).text,
         label=lambda v: parse_task(v).short.replace(" ", "-"), in_suite=False, trained=False),
    Axis("kv_len", int, None, "key/value length M (decode: a short seq_len against a long kv_len)",
         defaults_from="seq_len", minimum=1, flag="--kv-len", supported_by="supports_cross", innermost=True),
    Axis("seq_len", int, None, "query length N", minimum=1, flag="--seq-len", innermost=True, required=True),
    # Ragged batches (issue #28): per-sequence lengths, and how the sequences are laid out for the kernel.
    Axis("lengths", str, "fixed", "per-sequence lengths of a ragged batch (key lengths, clipped to kv_len): "
         + LENGTHS.help, parse=LENGTHS.canonical, label=lambda v: LENGTHS.parse(v).label, flag="--lengths",
         supported_by="supports_lengths", groups_reports=True, shown_when_set=True, title_prefix="lengths "),
    Axis("layout", str, "padded", "how a ragged batch reaches the kernel: padded (to the longest, masked) or "
         "packed (tokens concatenated, cumulative offsets)", choices=LAYOUTS, label=lambda v: v, flag="--layout",
         supported_by="supported_layouts", groups_reports=True, shown_when_set=True),
    Axis("page_size", int, 0, "paged KV cache: keys per page, reached through a seeded block table "
         "(0: one contiguous cache)", minimum=0, label=lambda v: f"page{v}", flag="--page-size",
         supported_by="supports_paged_kv", groups_reports=True),
    Axis("page_shuffle", float, 1.0, "paged KV cache: the share of pages placed out of order in the pool "
         "(fragmentation; 0: in order, 1: a full seeded shuffle; ignored at page_size 0)", parse=_fraction,
         label=lambda v: f"shuffle{v:g}", groups_reports=True),
))

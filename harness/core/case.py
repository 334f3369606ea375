"""One cell of a sweep: the `Case`, its stable id, and the dtype and mode names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from attnbench.core.axes import AXES, DEVICES, DTYPE_ALIASES, DTYPES, MODES, canonical_dtype
from attnbench.core.paging import paged_extra_bytes
from attnbench.core.records import Record
from attnbench.kinds.lengths import lengths_of
from attnbench.kinds.masks import mask_of

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
__all__ = ["DEVICES", "DTYPES", "DTYPE_ALIASES", "DTYPE_BYTES", "MODES", "Case", "batch_for_kv_cache",
           "canonical_dtype", "kv_cache_bytes_per_sequence"]


def _axis_fields(cls: type) -> type:
    """`cls` given one keyword-only field per case axis of `AXES`, in the declared order, with the axis's
    type and default (None where it follows another axis or is unset); a `required` axis (seq_len) has no
    default. The class body keeps only what no axis declares."""
    for axis in AXES.case_axes():
        cls.__annotations__[axis.name] = axis.kind if axis.required or axis.default is not None else axis.kind | None
        setattr(cls, axis.name, field(kw_only=True) if axis.required else field(default=axis.default, kw_only=True))
    return cls


@dataclass(frozen=True)
@_axis_fields
class Case(Record):
    """One cell: which variant runs, with which knobs, on which workload: one field per case axis of `AXES`.

    Every workload axis (`attnbench.core.axes`) is a keyword-only field, typed
    and defaulted as its declaration says, its text canonicalised and checked by
    it; a kind axis's kinds live in `attnbench.kinds`. ``seq_len`` is required.
    Inputs are q of shape (batch, heads, seq_len, head_dim), k of shape
    (batch, kv_heads, kv_len, head_dim) and v of shape (batch, kv_heads,
    kv_len, v_head_dim). kv_heads (default: heads) must divide heads: each
    group of heads // kv_heads query heads shares one key/value head (GQA;
    kv_heads = 1 is MQA). v_head_dim (default: head_dim) is the value and
    output head dim (MLA's unequal dims). `kv_cache_bytes` (default: unset)
    fixes the bytes of the KV cache, k and v of every sequence, and `batch` is
    then derived from it (`batch_for_kv_cache`), so a sweep over kv_len at one
    cache size trades batch for length as a serving system does. `page_shuffle`
    means nothing without pages (`page_size` 0) and is then kept at its default.
    Every random draw of the cell comes from a generator seeded with `seed`. A
    `task` other than ``none`` makes it a quality cell (`attnbench.tasks`).
    `params` holds every knob of the variant, defaults filled in, so the id
    says exactly what ran; `extra_axes` the values of axes a plugin registered.
    """

    variant: str
    params: dict[str, Any] = field(default_factory=dict)
    extra_axes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for axis in AXES.case_axes():
            if axis.name in AXES.builtin:
                object.__setattr__(self, axis.name, axis.check(getattr(self, axis.name)))
        for axis in AXES.case_axes():
            if axis.defaults_from and getattr(self, axis.name) is None:
                object.__setattr__(self, axis.name, getattr(self, axis.defaults_from))
        if self.page_size == 0:
            object.__setattr__(self, "page_shuffle", AXES["page_shuffle"].default)   # no pages, nothing to shuffle
        object.__setattr__(self, "extra_axes", _extra_axes(self.extra_axes))
        object.__setattr__(self, "params", dict(sorted(dict(self.params).items())))
        mask = mask_of(self)
        mask.kind.check(self, mask.arg)
        lengths = lengths_of(self)
        lengths.kind.check(self, lengths.arg)
        if self.kv_cache_bytes is not None:
            derived = batch_for_kv_cache(self.kv_cache_bytes, self)
            if derived != self.batch:
                raise ValueError(f"batch {self.batch} does not match kv_cache_bytes={self.kv_cache_bytes}: one sequence's "
                                 f"cache is {kv_cache_bytes_per_sequence(self)} bytes, so the batch is {derived}; "
                                 "leave batch out and let kv_cache_bytes set it")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads must divide heads (each key/value head serves heads // kv_heads query "
                             f"heads), got heads={self.heads}, kv_heads={self.kv_heads}")

    def axis(self, name: str) -> Any:
        """The case's value of axis `name`: a field, or one of `extra_axes` (its default when unset)."""
        if name in AXES.builtin:
            return getattr(self, name)
        return self.extra_axes.get(name, AXES[name].default)

    # A field whose default is "the value of another field" (`Axis.defaults_from`): it counts as default
    # when it equals that field.
    DEFAULTS_FROM: ClassVar[dict[str, str]] = {a.name: a.defaults_from for a in AXES if a.defaults_from}

    def identity(self) -> dict[str, Any]:
        """What the id hashes: the fields without a default, and every field that differs from its default.

        A field that was left at its default is left out, so a later attnbench that adds
        a field with a default gives every existing case the same id as before. A field
        named in `DEFAULTS_FROM` is at its default when it equals the field it follows
        (kv_len == seq_len).
        """
        data = self.to_dict()
        identity: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = data[spec.name]
            if spec.name in self.DEFAULTS_FROM:
                is_default = value == data[self.DEFAULTS_FROM[spec.name]]
            elif spec.default is not dataclasses.MISSING:
                is_default = value == spec.default
            elif spec.default_factory is not dataclasses.MISSING:
                is_default = value == spec.default_factory()
            else:
                is_default = False
            if not is_default:
                identity[spec.name] = value
        return identity

    @property
    def id(self) -> str:
        """Stable id: sha256 of the canonical JSON of `identity()`, 16 hex digits.

        Canonical JSON is ``json.dumps(identity, sort_keys=True, separators=(",", ":"))``.
        For example ``Case(variant="naive", seq_len=128)`` hashes
        ``{"seq_len":128,"variant":"naive"}``. This is the rule of store format
        version 2 (`attnbench.store.format`); the loader recomputes the ids of cells
        stored by older versions with it.
        """
        return _hash(self.identity())

    @property
    def config_key(self) -> str:
        """The id with the lengths left out (seq_len, kv_len): cells that differ only in length share it."""
        identity = self.identity()
        identity.pop("seq_len", None)
        identity.pop("kv_len", None)
        return _hash(identity)

    @property
    def label(self) -> str:
        """Readable id such as 'naive-cpu-float32-causal-fwd-B1H8N1024d64', then each axis's `label` part."""
        parts = [self.variant, self.device, self.dtype, "causal" if self.causal else "full", self.mode]
        shape = f"B{self.batch}H{self.heads}"
        if self.kv_heads != self.heads:
            shape += f"Hkv{self.kv_heads}"
        shape += f"N{self.seq_len}"
        if self.kv_len != self.seq_len:
            shape += f"M{self.kv_len}"
        shape += f"d{self.head_dim}"
        if self.v_head_dim != self.head_dim:
            shape += f"dv{self.v_head_dim}"
        for axis in AXES.case_axes():
            value = self.axis(axis.name)
            if axis.label is None and axis.name in self.extra_axes and value != axis.default:
                shape += f"-{axis.name}{value}"
            elif axis.label_part(value):
                shape += "-" + axis.label_part(value)
        knobs = "".join(f"-{k}{v}" for k, v in self.params.items())
        return "-".join(parts) + "-" + shape + knobs

    @property
    def element_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def input_bytes(self) -> int:
        """Bytes of q, k and v together."""
        q = self.batch * self.heads * self.seq_len * self.head_dim
        k = self.batch * self.kv_heads * self.kv_len * self.head_dim
        v = self.batch * self.kv_heads * self.kv_len * self.v_head_dim
        return (q + k + v) * self.element_bytes

    @property
    def output_bytes(self) -> int:
        """Bytes of the (batch, heads, seq_len, v_head_dim) output."""
        return self.batch * self.heads * self.seq_len * self.v_head_dim * self.element_bytes

    @property
    def bytes_moved(self) -> int:
        """The least bytes one call must move: q, k and v read once and the output written once.

        In ``fwd_bwd`` mode the backward adds q, k, v, the output and its
        gradient read once and the three input gradients written once:
        3·(inputs + output) in all. K and v count their `kv_heads` heads, so
        GQA and MQA move less; a decode step is dominated by the KV cache.
        A paged cache (`page_size`) reads whole pages, the last one's unused
        slots too, and its block table (`paged_extra_bytes`).
        """
        once = self.input_bytes + self.output_bytes
        if self.page_size:
            once += paged_extra_bytes(self)
        return 3 * once if self.mode == "fwd_bwd" else once

    @property
    def is_quality(self) -> bool:
        """True for a quality cell (a trained task), False for a kernel cell."""
        return self.task != "none"

    @property
    def grouped(self) -> bool:
        """True when key/value heads are shared (GQA/MQA: kv_heads < heads)."""
        return self.kv_heads != self.heads


def kv_cache_bytes_per_sequence(case) -> int:
    """Bytes of one sequence's KV cache: k (kv_heads, kv_len, head_dim) and v (kv_heads, kv_len, v_head_dim)."""
    heads = case.kv_heads if case.kv_heads is not None else case.heads
    value_dim = case.v_head_dim if case.v_head_dim is not None else case.head_dim
    kv_len = case.kv_len if case.kv_len is not None else case.seq_len
    return heads * kv_len * (case.head_dim + value_dim) * DTYPE_BYTES[canonical_dtype(case.dtype)]


def batch_for_kv_cache(cache_bytes: int, case) -> int:
    """The batch whose KV caches fill `cache_bytes`: floor(cache_bytes / one sequence's cache); ValueError below 1.

    `case` is anything with the shape fields of a `Case` (heads, kv_heads,
    kv_len, head_dim, v_head_dim, dtype), as attention-gym's ``--kv_size`` derives its batch.
    """
    per_sequence = kv_cache_bytes_per_sequence(case)
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes <= 0:
        raise ValueError(f"kv_cache_bytes must be a positive integer, got {cache_bytes!r}")
    batch = cache_bytes // per_sequence
    if batch < 1:
        raise ValueError(f"kv_cache_bytes={cache_bytes} holds less than one sequence's KV cache "
                         f"({per_sequence} bytes at kv_len {case.kv_len if case.kv_len is not None else case.seq_len}); "
                         "raise it or shorten kv_len")
    return batch


def _extra_axes(values: dict[str, Any]) -> dict[str, Any]:
    """The values of registered (non-built-in) axes, checked; those at their default left out. A name no
    axis is registered for here (a stored run of a plugin that is not installed) is kept as it is."""
    checked = {}
    for name, value in sorted(dict(values).items()):
        if name in AXES.builtin:
            raise ValueError(f"extra_axes names {name!r}, which is a field of the case")
        if name not in AXES:
            checked[name] = value
            continue
        value = AXES[name].check(value)
        if value != AXES[name].default:
            checked[name] = value
    return checked


def _hash(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Knobs: a variant's tunable parameters, declared once.

A variant lists its knobs as ``knobs = {"features": Knob(int, default=256,
minimum=1, doc="random features m")}``. That one declaration gives the
defaults `Case.params` is filled with, the reason a case with a bad value is
unsupported, the check of a suite's ``[params.<variant>]`` values, the
conversion of ``attnbench profile --param KEY=VALUE`` text, and what
``attnbench list`` shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

KNOB_TYPES: tuple[type, ...] = (int, float, bool, str)
_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Knob:
    """One knob: its type (int, float, bool or str), default, allowed values and meaning.

    minimum, maximum: inclusive bounds, for int and float knobs only (None: unbounded).
    choices: the only values allowed, if given.
    doc: what the knob is, in a few words (``attnbench list`` shows it).

    A float knob accepts integers and holds them as floats; no knob accepts
    a boolean unless it is a bool knob. The default must itself be allowed.
    """

    type: type
    default: Any
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in KNOB_TYPES:
            raise TypeError(f"a knob's type must be int, float, bool or str, not {self.type!r}")
        numeric = self.type in (int, float)
        for bound in ("minimum", "maximum"):
            value = getattr(self, bound)
            if value is None:
                continue
            if not numeric:
                raise TypeError(f"a {_TYPE_NAMES[self.type]} knob cannot have a {bound}; bounds are for int and float")
            if not _is_number(value):
                raise TypeError(f"a knob's {bound} must be a number, not {value!r}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"a knob's minimum {self.minimum!r} is above its maximum {self.maximum!r}")
        if self.choices is not None:
            choices = tuple(self.choices)
            if not choices or not all(self._has_type(c) for c in choices):
                raise TypeError(f"a {_TYPE_NAMES[self.type]} knob's choices must be a non-empty sequence of "
                                f"{_TYPE_NAMES[self.type]} values, not {self.choices!r}")
            object.__setattr__(self, "choices", tuple(self._as_type(c) for c in choices))
        if not isinstance(self.doc, str):
            raise TypeError(f"a knob's doc must be a string, not {self.doc!r}")
        if not self.accepts(self.default):
            raise ValueError(f"a knob's default must be {self.expected}, not {self.default!r}")
        object.__setattr__(self, "default", self._as_type(self.default))

    @classmethod
    def of(cls, default: Any) -> Knob:
        """The knob a plain default declares: its value's type, no bounds (``params = {"x": 1}``)."""
        if isinstance(default, Knob):
            return default
        kind = type(default)
        if kind not in KNOB_TYPES:
            raise TypeError(f"a knob's default must be an int, float, bool or str, not {default!r}; "
                            "declare it as Knob(type, default=...)")
        return cls(kind, default=default)

    @property
    def expected(self) -> str:
        """What a value must be, as the end of a sentence: 'an integer >= 1', "one of 'general', 'dot'"."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "a string"
        noun = "an integer" if self.type is int else "a number"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"{noun} from {low} to {high}"
        if low is not None:
            return f"{noun} >= {low}"
        if high is not None:
            return f"{noun} <= {high}"
        return noun

    def accepts(self, value: Any) -> bool:
        """Whether `value` is a value of this knob: its type, within the bounds, among the choices."""
        if not self._has_type(value):
            return False
        value = self._as_type(value)
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return self.choices is None or value in self.choices

    def coerce(self, value: Any) -> Any:
        """`value` in the knob's type (a float knob's integer as a float); ValueError if not accepted."""
        if not self.accepts(value):
            raise ValueError(f"must be {self.expected}, not {value!r}")
        return self._as_type(value)

    def parse(self, text: str) -> Any:
        """`text` (from a command line) as a value of this knob; ValueError saying what was expected."""
        text = text.strip()
        value: Any = text
        if self.type is bool:
            lowered = text.lower()
            value = True if lowered in _TRUE else False if lowered in _FALSE else None
        elif self.type in (int, float):
            try:
                value = self.type(text)
            except ValueError:
                value = None
        if value is None or not self.accepts(value):
            raise ValueError(f"expected {self.expected}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The declaration as JSON-ready data (``attnbench list --json``)."""
        return {"type": _TYPE_NAMES[self.type], "default": self.default, "minimum": self.minimum,
                "maximum": self.maximum, "choices": list(self.choices) if self.choices is not None else None,
                "doc": self.doc}

    def _has_type(self, value: Any) -> bool:
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is str:
            return isinstance(value, str)
        if not _is_number(value):
            return False
        if self.type is int:
            return isinstance(value, int)
        return math.isfinite(value)

    def _as_type(self, value: Any) -> Any:
        return float(value) if self.type is float else value


def declare_knobs(declared: Mapping[str, Any], owner: str = "a variant") -> Mapping[str, Knob]:
    """`declared` as a read-only name -> Knob mapping; a plain value becomes `Knob.of(value)`."""
    knobs: dict[str, Knob] = {}
    for name, knob in declared.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{owner}: a knob's name must be an identifier, not {name!r}")
        try:
            knobs[name] = Knob.of(knob)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{owner}: knob {name!r}: {exc}") from None
    return MappingProxyType(knobs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""The one grammar of a kind's text on every axis that names kinds: ``kind[:arg][,key=value...]``.

``sliding_window:256``, ``softcap:50``, ``clustered:16``, ``file:captured/q.safetensors`` and
``mqar:kv_pairs=8,steps=1000`` are all read here; each kind (`attnbench.kinds`) and the task spec
(`taskspec`) only check their argument and options. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KindText:
    """A kind's text split: the kind (lower case), its argument (None when absent), its ``key=value`` options."""

    axis: str
    text: str
    kind: str
    arg: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def error(self, problem: str) -> ValueError:
        """A ValueError naming the axis and the text as written: ``mask 'document:0': <problem>``."""
        return ValueError(f"{self.axis} {self.text!r}: {problem}")

    def bare(self, why: str = "", noun: str = "value") -> None:
        """Raise unless the kind came alone (``none``, ``alibi``): it takes no argument and no options."""
        if self.arg is not None or self.options:
            raise ValueError(f"{self.axis} {self.kind!r} takes no {noun}, got {self.text!r}{why}")

    def no_options(self) -> None:
        """Raise when ``key=value`` options follow a kind that takes none."""
        if self.options:
            raise self.error(f"takes no options ({', '.join(self.options)})")

    def number(self, example: str) -> float:
        """The argument as a number; a ValueError with `example` when it is missing or not a number."""
        try:
            return float(self.arg)
        except (TypeError, ValueError):
            raise self.error(f"needs a number after the colon, e.g. {example}") from None

    def whole(self, example: str) -> int:
        """The argument as a whole number; a ValueError with `example` when it is not one."""
        try:
            return int(str(self.arg))
        except ValueError:
            raise self.error(f"needs a whole number after the colon, e.g. {example}") from None


def split_kind(text: str, axis: str, kinds: tuple[str, ...], expected: str, *, whole_arg: tuple[str, ...] = ()) -> KindText:
    """`text` split by the grammar; ValueError saying `expected` when the kind is not one of `kinds`.

    A kind in `whole_arg` takes everything after its colon as the argument (a path may hold commas).
    """
    raw = str(text).strip()
    kind, sep, rest = raw.partition(":")
    kind = kind.strip().lower()
    if kind not in kinds:
        raise ValueError(f"unknown {axis} {text!r}: expected {expected}")
    if not sep:
        return KindText(axis, str(text), kind)
    if kind in whole_arg:
        return KindText(axis, str(text), kind, rest.strip())
    arg, options = None, {}
    for position, item in enumerate(part.strip() for part in rest.split(",")):
        name, eq, value = item.partition("=")
        if eq:
            options[name.strip()] = value.strip()
        elif position == 0:
            arg = item
        elif item:
            raise ValueError(f"{axis} {text!r}: option {item!r} must be name=value")
    return KindText(axis, str(text), kind, arg, options)

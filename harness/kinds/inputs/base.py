"""What an input kind gives: where q, k and v come from, and its parameter with its default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnbench.core.kindtext import KindText
from attnbench.kinds.family import Kind


@dataclass(frozen=True)
class InputKind(Kind):
    """A kind of the `inputs` axis. `reads_file`: q, k and v are read from a file, not drawn
    (`attnbench.measure.distributions` draws every other kind, seeded by the case)."""

    reads_file: bool = False

    def value(self, arg: Any) -> Any:
        """The argument with its default filled in (None for a kind without one)."""
        return arg


@dataclass(frozen=True)
class Parametrised(InputKind):
    """A drawn distribution with one optional number after its colon; `integer`: a whole number of at least 1."""

    default: float = 0.0
    integer: bool = False

    def read(self, split: KindText) -> float | int | None:
        if split.arg is None and not split.options:
            return None
        value = split.number(f"{self.name}:{self.default:g}")
        if self.integer and (not value.is_integer() or value < 1):
            raise split.error(f"{self.name} takes a whole number of at least 1")
        return int(value) if self.integer else value

    def text(self, arg: float | int | None) -> str:
        return super().text(None if arg == self.default else arg)

    def value(self, arg: float | int | None) -> float | int:
        return self.default if arg is None else arg

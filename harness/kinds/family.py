"""A kind and the family (registry) of one axis's kinds; the parsed value of a kind axis. Pure Python."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from attnbench.core.declared import Declarations
from attnbench.core.kindtext import KindText, split_kind


def number_text(value: float) -> str:
    """50.0 -> '50', 2.5 -> '2.5': a kind's number as its canonical text writes it."""
    return str(int(value) if float(value).is_integer() else value)


@dataclass(frozen=True)
class Kind:
    """One kind of an axis: its name and its phrase in the axis's help text.

    As it is, a kind takes no argument (``none``, ``alibi``); a kind that
    takes one overrides `read` (and `text` or `label` where they differ).
    `whole_arg`: everything after the colon is the argument (a path may hold commas).
    """

    name: str
    help: str
    whole_arg: bool = False

    def read(self, split: KindText) -> Any:
        """The checked argument of `split` (None for a kind that takes none); ValueError saying what is accepted."""
        split.bare()
        return None

    def text(self, arg: Any) -> str:
        """The canonical text of this kind with argument `arg`."""
        return self.name if arg is None else f"{self.name}:{number_text(arg)}"

    def label(self, arg: Any) -> str:
        """What a case label shows: the text without its colon (``softcap50``)."""
        return self.text(arg).replace(":", "")


@dataclass(frozen=True)
class Chosen:
    """A parsed value of a kind axis: the kind object and its checked argument."""

    kind: Any
    arg: Any = None

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def text(self) -> str:
        return self.kind.text(self.arg)

    @property
    def label(self) -> str:
        return self.kind.label(self.arg)


class KindFamily(Declarations[Kind]):
    """The kinds of one axis, in the order its help text lists them; `register` adds one."""

    what = "kind"

    def __init__(self, axis: str, builtins: Iterable[Kind]) -> None:
        self.axis = axis
        super().__init__(builtins)

    @property
    def help(self) -> str:
        """Every kind's phrase: 'none, alibi (...), or softcap:C (...)'."""
        phrases = [kind.help for kind in self]
        return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + ", or " + phrases[-1]

    def parse(self, text: str) -> Chosen:
        """'sliding_window:256' -> Chosen(<sliding_window>, 256); ValueError naming the axis and what it accepts."""
        whole = tuple(kind.name for kind in self if kind.whole_arg)
        split = split_kind(text, self.axis, self.names(), self.help, whole_arg=whole)
        kind = self[split.kind]
        return Chosen(kind, kind.read(split))

    def canonical(self, text: str) -> str:
        """`text` as the axis stores it (``Sliding_Window:256`` -> ``sliding_window:256``)."""
        return self.parse(text).text

"""An ordered table of named declarations (axes, metrics) that a plugin or a test may extend.

Pure Python; `attnbench.core.axes` and `attnbench.core.metrics` build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Declarations(Generic[T]):
    """Declarations by name, in the order they were declared; the first ones are the built-ins."""

    what = "declaration"

    def __init__(self, builtins: Iterable[T]) -> None:
        self._items: dict[str, T] = {}
        for item in builtins:
            self.register(item)
        self.builtin: frozenset[str] = frozenset(self._items)

    def register(self, item: T) -> T:
        """Add `item` after the others; ValueError when its name is taken."""
        if item.name in self._items:
            raise ValueError(f"a {self.what} named {item.name!r} is already declared")
        self._items[item.name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove a registered (not a built-in) declaration."""
        if name in self.builtin:
            raise ValueError(f"{name!r} is a built-in {self.what}")
        self._items.pop(name)

    def __iter__(self) -> Iterator[T]:
        return iter(tuple(self._items.values()))

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

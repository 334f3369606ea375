"""Names that load their module on first use (PEP 562), for the lazy `harness` and `attnbench.report`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(namespace: dict[str, Any], modules: Mapping[str, Iterable[str]]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The module-level `__getattr__`, `__dir__` and `__all__` of a package whose `modules` maps each
    module to the public names it defines; `namespace` is the package's `globals()`, where a loaded
    name is kept so that the next access does not come here."""
    table = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}; "
                                 f"its public names are: {', '.join(sorted(table))}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__, sorted(table)

"""The one way text from outside (plugins, suites, run names, exceptions, paths) reaches rich.

Anything a plugin or a user typed may contain rich markup (``[/]``, ``[bold]``);
printed unescaped it is styled, or aborts the whole command with a MarkupError.
Every such text goes through `safe` before it is put in a rich string, table
cell or title. Standard library at import time: rich is imported on first use.
"""

from __future__ import annotations


def safe(text: object) -> str:
    """`text` as a string rich prints literally, markup and all."""
    from rich.markup import escape

    return escape(str(text))


__all__ = ["safe"]

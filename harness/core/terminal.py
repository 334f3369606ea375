"""Tables for people and for logs: every figure and every word stays on one line.

A `TextTable` is plain data (its texts are never read as rich markup) drawn by
`print_table` in one of three layouts:

- on a terminal, a rich table at the terminal's width, when it fits;
- elsewhere (a pipe, a file, a CI log), a padded Markdown table at its
  natural width, when it fits `COLUMNS` (no limit when `COLUMNS` is unset);
- when it fits neither, one block per row: the row's first cell, then its
  other cells as ``column: value`` pairs packed onto lines of the width.

No layout folds a value: a line may be longer than the width, a figure is
never cut. Standard library at import time; rich is imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

UNBOUNDED = 1_000_000
SEPARATOR = " · "
PAIR_SEPARATOR = " | "


@dataclass(frozen=True)
class Cell:
    """One table cell: its lines of plain text and a rich style for all of them (ignored off a terminal)."""

    lines: tuple[str, ...] = ()
    style: str | None = None

    @property
    def text(self) -> str:
        """The cell on one line: its lines joined with ' · '."""
        return SEPARATOR.join(line for line in self.lines if line)


def cell(value: Any = "", style: str | None = None) -> Cell:
    """A cell of `value` as text; a newline starts another line of the cell."""
    if isinstance(value, Cell):
        return value
    text = "" if value is None else str(value)
    return Cell(lines=tuple(text.split("\n")) if text else (), style=style)


@dataclass(frozen=True)
class TextTable:
    """A titled table: column names, which of them are figures (right-aligned), and rows of cells."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...] = ()
    numeric: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
           numeric: Iterable[str] = ()) -> TextTable:
        """A table whose cells are built with `cell` (text, or a `Cell` kept as it is)."""
        built = tuple(tuple(cell(value) for value in row) for row in rows)
        for row in built:
            if len(row) != len(columns):
                raise ValueError(f"a row of {len(row)} cells in a table of {len(columns)} columns ({title!r})")
        return cls(title=title, columns=tuple(columns), rows=built, numeric=frozenset(numeric))


def shorten(text: str, limit: int) -> str:
    """`text` on one line within `limit` characters, cut between words with '…' (never inside a word)."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(limit - 1, 1)]
    if " " in cut and flat[len(cut)] != " ":
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def output_width(console) -> int:
    """The width tables must fit: the terminal's, else `COLUMNS`, else no limit."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else UNBOUNDED


def make_console(stderr: bool = False):
    """A rich console that, off a terminal, wraps no line: its width is `COLUMNS`, else unlimited."""
    from rich.console import Console

    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=output_width(probe))


def print_table(table: TextTable, console=None) -> None:
    """Draw `table` in the layout that keeps every value on one line (see the module's docstring)."""
    console = console or make_console()
    width = output_width(console)
    if console.is_terminal:
        drawn = _rich_table(table)
        if console.measure(drawn, options=console.options.update_width(UNBOUNDED)).maximum <= width:
            console.print(drawn)
            return
    else:
        lines = markdown_lines(table)
        if max(map(len, lines)) <= width:
            _print_lines(console, lines)
            return
    _print_lines(console, record_lines(table, width))


def markdown_lines(table: TextTable) -> list[str]:
    """The table as a padded Markdown table, one line per row, under its title."""
    header = list(table.columns)
    body = [[c.text for c in row] for row in table.rows]
    widths = [max(len(text) for text in column) for column in zip(header, *body, strict=True)]
    widths = [max(w, 3) for w in widths]

    def line(texts: list[str]) -> str:
        cells = [text.rjust(w) if name in table.numeric else text.ljust(w)
                 for text, w, name in zip(texts, widths, header, strict=True)]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if name in table.numeric else "-" * (w + 2)
                          for w, name in zip(widths, header, strict=True)) + "|"
    lines = [line(header), rule, *(line(texts) for texts in body)]
    return ([table.title, ""] if table.title else []) + lines + [""]


def record_lines(table: TextTable, width: int) -> list[str]:
    """One block per row: its first cell, then `column: value` pairs, ' | ' between them, packed onto lines of
    `width` (a pair longer than the width has a line of its own)."""
    lines = [table.title] if table.title else []
    for row in table.rows:
        head, rest = row[0], row[1:]
        lines.append(head.text or "–")
        pairs = [f"{name}: {c.text}" for name, c in zip(table.columns[1:], rest, strict=True) if c.text]
        current = ""
        for pair in pairs:
            candidate = f"{current}{PAIR_SEPARATOR}{pair}" if current else f"  {pair}"
            if current and len(candidate) > width:
                lines.append(current)
                candidate = f"  {pair}"
            current = candidate
        if current:
            lines.append(current)
    return lines + [""]


def _rich_table(table: TextTable):
    from rich.table import Table
    from rich.text import Text

    drawn = Table(title=Text(table.title) if table.title else None, title_justify="left",
                  show_lines=any(len(c.lines) > 1 for row in table.rows for c in row))
    for name in table.columns:
        drawn.add_column(Text(name), justify="right" if name in table.numeric else "left", no_wrap=True)
    for row in table.rows:
        drawn.add_row(*(Text("\n".join(c.lines), style=c.style or "") for c in row))
    return drawn


def _print_lines(console, lines: list[str]) -> None:
    from rich.text import Text

    for line in lines:
        console.print(Text(line), soft_wrap=True, highlight=False)


__all__ = ["Cell", "TextTable", "cell", "make_console", "markdown_lines", "output_width", "print_table", "shorten",
           "record_lines"]

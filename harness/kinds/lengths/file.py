"""``file:PATH``: lengths sampled (seeded, with replacement) from a real trace.

The file holds one whole number per line (blank lines and ``#`` comments are
skipped), or is a CSV with a header: ``file:trace.csv,column=input_tokens``
names the column (without it, the first column).
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind

COLUMN = ",column="


@functools.lru_cache(maxsize=32)
def _read_trace(path: str, column: str | None, mtime: float) -> tuple[int, ...]:
    with open(path, newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
    if column is not None or (lines and not lines[0].strip().lstrip("-").isdigit()):
        rows = list(csv.DictReader(lines))
        name = column if column is not None else (list(rows[0]) if rows else [""])[0]
        if rows and name not in rows[0]:
            raise ValueError(f"lengths file:{path}: the CSV has no column {name!r} (columns: {', '.join(rows[0])}); "
                             f"name one with file:{path},column=NAME")
        values = [row[name] for row in rows]
    else:
        values = [line.strip() for line in lines]
    try:
        lengths = tuple(int(float(value)) for value in values)
    except ValueError as exc:
        raise ValueError(f"lengths file:{path}: every length must be a whole number ({exc}); write one per line "
                         "or name a CSV column of whole numbers") from None
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths file:{path}: needs at least one length, each at least 1")
    return lengths


def trace_lengths(path: str, column: str | None = None) -> tuple[int, ...]:
    """Every length in the trace at `path` (its CSV `column`); ValueError naming the file and what to fix."""
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        raise ValueError(f"lengths file:{path}: no such file (the path is relative to the directory you run "
                         "attnbench from); give a file of one whole number per line or a CSV") from None
    return _read_trace(path, column, mtime)


@dataclass(frozen=True)
class File(LengthsKind):
    def read(self, split: KindText) -> tuple[str, str | None]:
        if not split.arg:
            raise split.error("needs a path after 'file:', e.g. file:traces/prompts.txt or "
                              "file:trace.csv,column=input_tokens")
        path, sep, column = split.arg.rpartition(COLUMN)
        return (path, column) if sep else (split.arg, None)

    def text(self, arg) -> str:
        return f"file:{arg[0]}" + (f"{COLUMN}{arg[1]}" if arg[1] else "")

    def label(self, arg) -> str:
        return "file" + os.path.basename(arg[0]).rsplit(".", 1)[0]

    def draw(self, arg, count, rng) -> list[int]:
        trace = trace_lengths(*arg)
        return [rng.choice(trace) for _ in range(count)]

    def check(self, case, arg) -> None:
        trace_lengths(*arg)


FILE = File("file", "file:PATH (sampled from a trace: one length per line, or file:PATH,column=NAME of a CSV)",
            whole_arg=True)

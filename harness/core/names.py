"""Names are not paths: the one rule that turns a user's name into a file-safe stem.

Standard library only (no torch), so the store, the reports and the CLI share it.
A run keeps the name it was given (in run.json, as data); only the file and
folder names made from it go through `safe_file_stem`.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from attnbench.core.errors import AttnbenchError

MAX_STEM = 80
FALLBACK = "run"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def safe_file_stem(name: str, *, max_len: int = MAX_STEM, fallback: str = FALLBACK) -> tuple[str, str | None]:
    """`(stem, note)`: a file-name stem made from `name`, and a line saying what was changed (None if nothing).

    The stem holds only ASCII letters, digits and ``_ . + -``; path separators
    (``/`` and ``\\``), control characters and every other character become
    ``-`` (accented letters lose their accents first), runs of dots collapse,
    so ``..`` can never appear, and leading dots and dashes are dropped, so the
    stem is never hidden, never an option and never a path. It is at most
    `max_len` characters and never empty (`fallback` instead).
    """
    text = str(name)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE.sub("-", ascii_text)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"-{2,}", "-", stem)
    stem = stem.lstrip(".-").rstrip("-.")[:max_len].rstrip("-.")
    if not stem:
        stem = fallback
    shown = text if len(text) <= max_len else text[:max_len] + "..."
    note = None if stem == text else f"name {shown!r} is written as file name {stem!r}"
    return stem, note


def ensure_writable_dir(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Make sure folder `path` exists (creating it) and can be written; return it as a Path.

    Raises AttnbenchError naming `what` (e.g. 'results folder'), the path and
    `hint` (what to do) when it is a file, sits under a file, or refuses a
    write. Writability is tested with an actual write, not the mode bits
    (root ignores them, and so do some network file systems).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AttnbenchError(f"{what} {path} is a file, not a folder; {hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttnbenchError(f"cannot create {what} {path}: {exc.strerror or exc}; {hint}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".attnbench-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AttnbenchError(f"{what} {path} cannot be written: {exc.strerror or exc}; {hint}") from None
    return path

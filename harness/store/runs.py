"""Run folders: writing cells durably, loading, listing and resolving runs.

A run folder ``results/<run-id>/`` holds:

- ``run.json``: the `Run` (identity, suite text, times, status, environment,
  calibration, ``format_version``), rewritten atomically when it changes;
- ``cells.jsonl``: one JSON object per finished cell (``format_version``,
  ``case_id``, ``case``, ``result``, ``meta``, ``recorded_at``), appended,
  flushed and fsynced before the next cell starts. A torn last line (a crash
  mid-write) or a corrupted line is reported by `load_run` and skipped;
  nothing else is lost and nothing is rewritten.

Both files carry the store format version (`attnbench.store.format`): `load_run`
upgrades what older versions wrote, so a `LoadedRun` is always at
`FORMAT_VERSION` (its case ids follow the current `Case.id` rule), and refuses
a version it does not know with a `StoreError` saying to upgrade attnbench.

This module imports neither torch nor the variants, so a run copied off a GPU
cluster loads on a laptop that has no torch.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnbench.core.errors import StoreError
from attnbench.core.names import safe_file_stem
from attnbench.core.result import Result, Run
from attnbench.store.format import FORMAT_VERSION, upgrade_cell, upgrade_run

RUN_FILE = "run.json"
CELLS_FILE = "cells.jsonl"
LOCK_FILE = ".lock"
ATTENTION_MAPS_FILE = "attention_maps.json"
RESULTS_ENV = "ATTNBENCH_RESULTS"

def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def default_results_dir() -> Path:
    """``$ATTNBENCH_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV) or "results")


def new_run_id(name: str) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    slug, _ = safe_file_stem(name, max_len=40)
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Cell:
    """One stored line of cells.jsonl: the case (as a dict), its id, what it gave, and variant metadata.

    `to_json` writes the line at `FORMAT_VERSION`; `from_json` reads a line of
    any version this attnbench reads and upgrades it (an older line's
    ``case_id`` is recomputed from its case with the current `Case.id` rule).
    """

    case_id: str
    case: dict[str, Any]
    result: Result
    meta: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""

    def to_json(self) -> str:
        record = {"format_version": FORMAT_VERSION, "case_id": self.case_id, "case": self.case,
                  "result": self.result.to_dict(), "meta": self.meta, "recorded_at": self.recorded_at}
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, line: str, source: Path | str = CELLS_FILE) -> Cell:
        """The cell of one line. Raises ValueError for a line that is not a cell, StoreError for an unknown version."""
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("not a cell record (needs case_id, case and result)")
        record = upgrade_cell(record, source)
        if not {"case_id", "case", "result"} <= set(record):
            raise ValueError("not a cell record (needs case_id, case and result)")
        return cls(case_id=record["case_id"], case=record["case"], result=Result.from_dict(record["result"]),
                   meta=record.get("meta") or {}, recorded_at=record.get("recorded_at", ""))


@dataclass(frozen=True)
class LoadedRun:
    """A run read back: its `Run`, its cells (each case once), and what was skipped while reading."""

    path: Path
    run: Run
    cells: tuple[Cell, ...]
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """The stored status, except that a 'running' run no driver holds is 'interrupted'."""
        if self.run.status == "running" and not _is_locked(self.path):
            return "interrupted"
        return self.run.status

    def case_ids(self) -> set[str]:
        return {cell.case_id for cell in self.cells}


class RunWriter:
    """Writes one run folder. Only one writer may hold a folder at a time (a lock file).

    Use `create` for a new run and `reopen` to resume one. Every `append`
    is on disk (flushed and fsynced) when it returns.
    """

    def __init__(self, path: Path, run: Run, lock_handle) -> None:
        self.path = path
        self.run = run
        self._lock_handle = lock_handle
        self._cells = open(path / CELLS_FILE, "a", encoding="utf-8")

    @classmethod
    def create(cls, results_dir: Path, run: Run) -> RunWriter:
        path = Path(results_dir) / run.run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise StoreError(f"run folder {path} already exists; choose another --name or use --resume") from None
        except OSError as exc:
            raise StoreError(f"cannot create run folder {path}: {exc.strerror}; check --results") from None
        lock = _acquire_lock(path)
        run = replace(run, format_version=FORMAT_VERSION)
        _write_json_atomic(path / RUN_FILE, run.to_dict())
        (path / CELLS_FILE).touch()
        _fsync_dir(path)
        return cls(path, run, lock)

    @classmethod
    def reopen(cls, path: Path) -> tuple[RunWriter, LoadedRun]:
        """Take over an existing run folder to resume it; refuses if another driver holds it.

        A run stored by an older format version is resumed in place: its old
        lines stay as they are (each line names its own version) and run.json
        is rewritten at `FORMAT_VERSION`.
        """
        lock = _acquire_lock(path)
        try:
            loaded = load_run(path)
        except BaseException:
            lock.close()
            raise
        cells_path = path / CELLS_FILE
        if cells_path.exists() and cells_path.stat().st_size:
            with open(cells_path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
            if torn:
                with open(cells_path, "a", encoding="utf-8") as handle:
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
        writer = cls(path, loaded.run, lock)
        writer.update(status="running", ended_at=None)
        return writer, loaded

    def append(self, cell: Cell) -> None:
        self._cells.write(cell.to_json() + "\n")
        self._cells.flush()
        os.fsync(self._cells.fileno())

    def update(self, **changes: Any) -> None:
        data = {**self.run.to_dict(), **changes}
        self.run = Run.from_dict(data)
        _write_json_atomic(self.path / RUN_FILE, data)

    def close(self, status: str) -> None:
        try:
            self.update(status=status, ended_at=now_iso())
        finally:
            self._cells.close()
            self._lock_handle.close()


def load_run(path: Path | str) -> LoadedRun:
    """Read a run folder, upgrading what older format versions wrote.

    Raises StoreError if run.json is missing or not a run, or if run.json or a
    cell line is in a format version this attnbench does not read.
    """
    path = Path(path)
    run_file = path / RUN_FILE
    if not path.is_dir():
        raise StoreError(f"{path} is not a folder; expected a run folder holding {RUN_FILE} and {CELLS_FILE}")
    try:
        data = json.loads(run_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path} has no {RUN_FILE}: it is not an attnbench run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{run_file} cannot be read as JSON ({exc}); the run folder is damaged") from None
    if isinstance(data, dict):
        data = upgrade_run(data, run_file)
    if not isinstance(data, dict) or not {"run_id", "suite_text", "started_at"} <= set(data):
        raise StoreError(f"{run_file} is not an attnbench run (it lacks run_id, suite_text or started_at)")
    try:
        run = Run.from_dict(data)
    except TypeError as exc:
        raise StoreError(f"{run_file} is not an attnbench run: {exc}") from None
    cells, problems = _read_cells(path / CELLS_FILE)
    return LoadedRun(path=path, run=run, cells=tuple(cells), problems=tuple(problems))


def _read_cells(cells_path: Path) -> tuple[list[Cell], list[str]]:
    problems: list[str] = []
    cells: list[Cell] = []
    seen: set[str] = set()
    try:
        raw = cells_path.read_bytes()
    except FileNotFoundError:
        return [], [f"{cells_path} is missing; the run has no cells"]
    lines = raw.split(b"\n")
    last_index = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            cell = Cell.from_json(line.decode("utf-8"), f"{cells_path}:{number}")
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            where = "torn last line" if number - 1 == last_index else "corrupted line"
            problems.append(f"{cells_path}:{number}: {where} skipped ({len(line)} bytes): {exc}")
            continue
        if cell.case_id in seen:
            problems.append(f"{cells_path}:{number}: case {cell.case_id} stored twice; the first is kept")
            continue
        seen.add(cell.case_id)
        cells.append(cell)
    return cells, problems


def list_runs(results_dir: Path | str) -> list[LoadedRun]:
    """Every readable run under `results_dir`, newest first."""
    results_dir = Path(results_dir)
    runs = []
    if results_dir.is_dir():
        for child in results_dir.iterdir():
            if (child / RUN_FILE).is_file():
                try:
                    runs.append(load_run(child))
                except StoreError:
                    continue
    return sorted(runs, key=lambda r: (r.run.started_at, r.run.run_id), reverse=True)


def resolve_run(reference: str, results_dir: Path | str | None = None) -> Path:
    """A run folder from a run id, a run name (newest wins), a folder path, or 'latest'."""
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    candidate = Path(reference)
    if (candidate / RUN_FILE).is_file():
        return candidate
    if (results_dir / reference / RUN_FILE).is_file():
        return results_dir / reference
    runs = list_runs(results_dir)
    if reference == "latest" and runs:
        return runs[0].path
    named = [r for r in runs if r.run.name == reference]
    if named:
        return named[0].path
    if candidate.exists():
        raise StoreError(f"{candidate} is not an attnbench run folder (it has no {RUN_FILE})")
    known = [r.run.run_id for r in runs[:5]] + sorted({r.run.name for r in runs})[:5]
    hint = f"; known runs include {', '.join(known)}" if known else f"; {results_dir} holds no runs yet"
    raise StoreError(f"no run {reference!r} in {results_dir} (give a run id, a run name, a folder or 'latest'){hint}")


def load_runs(references: Iterable[str], results_dir: Path | str | None = None) -> list[LoadedRun]:
    return [load_run(resolve_run(ref, results_dir)) for ref in references]


def _acquire_lock(path: Path):
    handle = open(path / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreError(f"run folder {path} is in use by another attnbench driver (pid {holder}); "
                         "wait for it to finish or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _is_locked(path: Path) -> bool:
    lock_path = path / LOCK_FILE
    if not lock_path.exists():
        return False
    with open(lock_path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

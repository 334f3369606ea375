"""The store's format version, and the upgrades that let older run folders keep loading.

Every ``run.json`` and every line of ``cells.jsonl`` carries ``format_version``.
`load_run` passes each through `upgrade_run` / `upgrade_cell`, which apply one
step per version until the record is at `FORMAT_VERSION`, as pytest-benchmark
normalises its saved files on load. A version this attnbench does not know (a
newer attnbench wrote it) is refused with a `StoreError` that names the file,
the version found, the versions read here, and says to upgrade attnbench.
Nothing on disk is rewritten: a folder written by an older version stays as it
was, and a resumed one holds lines of both versions, each read by its own.

Versions:

1. ``run.json`` has ``format_version: 1``; cell lines have no
   ``format_version``. A case id is the sha256 of the canonical JSON of every
   field of the case, so a new field, even at its default, changed every id.
2. Cell lines carry ``format_version``. A case id hashes only the fields that
   differ from their defaults, plus those that have none (variant, seq_len);
   kv_len is at its default when it equals seq_len (`Case.identity`). Upgrading
   a version 1 cell recomputes its ``case_id`` from its stored case with this
   rule, so ``--resume`` and ``compare`` match cells across versions.
3. A timing's ``ci_low_s``/``ci_high_s`` are null when the samples are too
   few for a 95% interval of the median (fewer than 6); version 2 stored the
   min–max there, which covers about 75% with 3 samples, so upgrading nulls
   them. fwd_bwd FLOPs count the backward as 2.5× the forward (version 2:
   2×), so upgrading scales a fwd_bwd cell's ``flops`` and ``flops_per_s``
   by 3.5/3. Timings gain ``cpu_share``, ``contended`` and ``attempts``;
   accuracy gains ``ok``, ``tolerance`` and ``failures`` (absent: not
   judged); results gain ``performed_flops``; memory gains
   ``resident_bytes_fwd``/``resident_bytes_fwd_bwd``/``resident_method``
   (on the CPU ``peak_bytes_*`` is now the allocator's peak; a version 2
   CPU peak is the resident one, method ``linux-vmhwm``). Later version 3
   cells also give each error ``max_rel_error`` and are judged by scale-free
   bounds (``max_rel``, ``grad_max_rel`` in ``accuracy.tolerance``); earlier
   ones have neither and keep the verdict of their absolute ``max_abs`` and
   ``grad_max_abs`` bounds. Both read as written, with no upgrade step: the
   field is new at a default (None), and the bounds used are stored with
   each verdict.

To add version N+1: raise `FORMAT_VERSION` (declared in `attnbench.core.result`), add a step from N to each of
`_RUN_STEPS` and `_CELL_STEPS`, document it above and in results/README.md,
and commit a reference run written by version N+1 under tests/data/.

Imports neither torch nor the variants.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.core.case import Case
from attnbench.core.errors import StoreError
from attnbench.core.machine import package_version
from attnbench.core.result import FORMAT_VERSION

OLDEST_VERSION = 1
"""The oldest version this attnbench upgrades on load."""

READABLE_VERSIONS = tuple(range(OLDEST_VERSION, FORMAT_VERSION + 1))

UNVERSIONED_CELL = 1
"""A cell line without ``format_version`` was written by version 1 (only run.json carried it then)."""

UNVERSIONED_RUN = 1
"""A run.json without ``format_version`` predates the field; it reads as version 1."""


def _run_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    return data


def _cell_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    case = record.get("case")
    if "case_id" not in record or not isinstance(case, dict):
        return record  # not a cell; the loader says what it lacks
    try:
        case_id = Case.from_dict(case).id
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a format version 1 cell whose case cannot be read, so its id cannot be "
                         f"recomputed: {exc}") from None
    return {**record, "case_id": case_id}


def _cell_2_to_3(record: dict[str, Any]) -> dict[str, Any]:
    result = record.get("result")
    if not isinstance(result, dict):
        return record
    result = dict(result)
    timing = result.get("timing")
    if isinstance(timing, dict) and len(timing.get("samples_s") or ()) < VERSION_3_INTERVAL_SAMPLES:
        result["timing"] = {**timing, "ci_low_s": None, "ci_high_s": None}
    case = record.get("case")
    if isinstance(case, dict) and case.get("mode") == "fwd_bwd":
        for key in ("flops", "flops_per_s"):
            if isinstance(result.get(key), int | float):
                scaled = result[key] * 3.5 / 3
                result[key] = round(scaled) if key == "flops" else scaled
    return {**record, "result": result}


VERSION_3_INTERVAL_SAMPLES = 6
"""Fewest samples for a 95% interval of the median (`attnbench.measure.stats.min_samples_for_interval`)."""

_RUN_STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _run_1_to_2, 2: _run_1_to_2}
_CELL_STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _cell_1_to_2, 2: _cell_2_to_3}


def upgrade_run(data: dict[str, Any], source: Path | str = "run.json") -> dict[str, Any]:
    """`data` (a parsed run.json) brought to `FORMAT_VERSION`; raises StoreError for a version not read here."""
    version = _version_of(data, UNVERSIONED_RUN, source)
    while version < FORMAT_VERSION:
        data = _RUN_STEPS[version](data)
        version += 1
    return {**data, "format_version": FORMAT_VERSION}


def upgrade_cell(record: dict[str, Any], source: Path | str = "cells.jsonl") -> dict[str, Any]:
    """`record` (a parsed cells.jsonl line) brought to `FORMAT_VERSION`.

    Raises StoreError for a version not read here, and ValueError for a
    version 1 record whose case cannot be read (the loader skips that line
    and reports it).
    """
    version = _version_of(record, UNVERSIONED_CELL, source)
    while version < FORMAT_VERSION:
        record = _CELL_STEPS[version](record)
        version += 1
    return {**record, "format_version": FORMAT_VERSION}


def _version_of(data: dict[str, Any], unversioned: int, source: Path | str) -> int:
    version = data.get("format_version", unversioned)
    if isinstance(version, int) and not isinstance(version, bool) and version in READABLE_VERSIONS:
        return version
    readable = ", ".join(str(v) for v in READABLE_VERSIONS)
    found = f"store format version {version!r}"
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        advice = ("it was written by a newer attnbench: upgrade attnbench (pip install -U attnbench) "
                  "to read this run")
    else:
        advice = "no attnbench writes that version; the file may be damaged or not from attnbench"
    raise StoreError(f"{source} has {found}, but attnbench {package_version('attnbench') or '(not installed)'} reads versions "
                     f"{readable}; {advice}")


__all__ = ["FORMAT_VERSION", "OLDEST_VERSION", "READABLE_VERSIONS", "upgrade_cell", "upgrade_run"]

"""Tiny suites for tests that run real cells: a few CPU cells, each timed for a few hundredths of a second."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

# No contention re-measure (test_contention.py tests it): on a busy machine each would wait 1.5 s more.
TINY_MEASURE = {"warmup_s": 0.01, "budget_s": 0.05, "min_reps": 3, "timeout_s": 60, "contention_retries": 0}


def tiny_suite(name: str, variants: Iterable[str], seq_lens: Iterable[int] = (64, 128), *,
               defaults: Mapping[str, Any] | None = None, sweep: Mapping[str, Any] | None = None,
               measure: Mapping[str, Any] | None = None) -> str:
    """The TOML text of suite `name`: `variants` × `seq_lens` on the CPU, 2 heads of 32, `TINY_MEASURE`.

    `defaults`, `sweep` and `measure` add keys to those tables or replace theirs.
    """
    tables = {
        "suite": {"name": name, "variants": list(variants)},
        "defaults": {"heads": 2, "head_dim": 32, "device": "cpu", **(defaults or {})},
        "sweep": {"seq_len": list(seq_lens), **(sweep or {})},
        "measure": {**TINY_MEASURE, **(measure or {})},
    }
    # json.dumps writes strings, numbers, booleans and lists exactly as TOML spells them
    return "\n".join(f"[{table}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
                     for table, keys in tables.items())


def all_cells_ok(stdout: str, count: int) -> bool:
    """Whether `attnbench run`'s summary says `count` cells, all ok: 'cells by status: ok 4', with or without
    '(of which 1 contended)' (a cell timed while another process held the CPU is still ok)."""
    lines = [line for line in stdout.splitlines() if line.startswith("cells by status: ")]
    return len(lines) == 1 and re.fullmatch(rf"cells by status: ok {count}( \(of which [^)]*\))?", lines[0]) is not None

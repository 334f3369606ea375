"""Tiny suites for tests that run real cells (a few CPU cells, each timed for a few hundredths of a second),
and one cell measured in the test's own process."""

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


def check_kind_axis(axis: str, values: list[str], refused: tuple[str, str, str], unknown: str) -> None:
    """A kind axis end to end: a variant without the kind says why, a suite sweeps `values` on naive,
    and an `unknown` kind in a suite is refused naming the key. `refused` is (variant, value, reason)."""
    import pytest

    from attnbench.core.case import Case
    from attnbench.core.registry import default_registry
    from attnbench.plan.suite import expand, parse_suite

    registry = default_registry()
    variant, value, reason = refused
    case = Case(variant=variant, seq_len=64, **{axis: value})
    assert any(reason in r for r in registry.get(variant).unsupported_reasons(case))
    suite = parse_suite(f'[suite]\nname = "k"\nvariants = ["naive"]\n[defaults]\nheads = 2\nhead_dim = 16\n'
                        f'[sweep]\nseq_len = [64]\n{axis} = {json.dumps(values)}\n', "k.toml")
    assert sorted(getattr(c, axis) for c in expand(suite, registry)) == sorted(values)
    bad = f'[suite]\nname = "b"\nvariants = ["naive"]\n[sweep]\nseq_len = [64]\n{axis} = ["{unknown}"]\n'
    with pytest.raises(Exception, match=rf"b.toml: key 'sweep.{axis}\[0\]'?.*unknown {axis} '{unknown}'"):
        expand(parse_suite(bad, "b.toml"), registry)


def skip_unless_supported(variant, case) -> None:
    """Skip the test with `variant`'s reasons when it cannot run `case` here (no CUDA, no flash-attn...)."""
    import pytest

    reasons = variant.unsupported_reasons(case)
    if reasons:
        pytest.skip("; ".join(reasons))


def measure_accurate(case, variant, settings):
    """`case` measured by `variant` in this process, asserted ok and within the variant's tolerance; the result.
    Skips the test where the variant cannot run the case."""
    from attnbench.measure.cell import measure_case

    skip_unless_supported(variant, case)
    result = measure_case(case, variant, settings)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    return result

"""Suites are data, and hostile ones fail cleanly: Hypothesis throws random TOML at the loader.

Every input either loads and expands, or raises the one documented error type
(AttnbenchError: SuiteError or UnknownVariantError) with a message that names
a key, the file or the variant. Never another exception, never a hang, and
nothing is run: parsing and expansion start no worker and write no file.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnbench.core.errors import AttnbenchError
from attnbench.core.registry import default_registry
from attnbench.core.settings import settings_field_types
from attnbench.plan.suite import AXES, TABLES, expand, parse_suite

REGISTRY = default_registry()
KEYS = list(AXES.sweep_order()) + list(settings_field_types()) + list(TABLES) + ["name", "variants", "description", "bogus", ""]
SCALARS = st.one_of(
    st.integers(min_value=-2**40, max_value=2**40), st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["naive", "sdpa-flash", "fp32", "bf16", "float8", "cpu", "cuda", "fwd", "fwd_bwd", "all",
                     "__import__('os').system('touch /tmp/pwned')", "<script>", ""]),
    st.text(max_size=8),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=6), max_leaves=20)
TABLE = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
SUITES = st.fixed_dictionaries({}, optional={
    "suite": st.fixed_dictionaries({}, optional={
        "name": SCALARS,
        "variants": st.one_of(st.just("all"), st.lists(st.sampled_from(REGISTRY.names() + ["nope", "naiv"]),
                                                       max_size=3), SCALARS)}),
    "defaults": TABLE,
    "sweep": st.dictionaries(st.sampled_from(list(AXES.sweep_order()) + ["bogus"]),
                             st.one_of(st.lists(SCALARS, max_size=5), SCALARS,
                                       st.lists(st.integers(1, 64), min_size=1, max_size=400)), max_size=5),
    "params": st.dictionaries(st.sampled_from(REGISTRY.names()[:4] + ["nope"]), TABLE, max_size=2),
    "measure": TABLE,
    "extra": TABLE,
})


def to_toml(data: dict) -> str:
    """A tiny TOML writer for what the strategies make (tables of scalars and arrays)."""
    lines: list[str] = []

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else "nan"
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
        return "[" + ", ".join(value(x) for x in v) + "]"

    def key(k):
        return '"' + k + '"' if not k or not k.replace("_", "").replace("-", "").isalnum() else k

    for table, body in data.items():
        nested = {k: v for k, v in body.items() if isinstance(v, dict)}
        lines.append(f"[{table}]")
        lines += [f"{key(k)} = {value(v)}" for k, v in body.items() if not isinstance(v, dict)]
        for sub, sub_body in nested.items():
            lines.append(f"[{table}.{key(sub)}]")
            lines += [f"{key(k)} = {value(v)}" for k, v in sub_body.items()]
    return "\n".join(lines) + "\n"


def check(text: str) -> None:
    try:
        suite = parse_suite(text, "fuzz.toml")
        cases = expand(suite, REGISTRY)
    except AttnbenchError as error:
        message = str(error)
        assert message and ("fuzz.toml" in message or "variant" in message), message
        assert "Traceback" not in message
        return
    assert all(case.seq_len > 0 and case.variant in REGISTRY.variants for case in cases)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(SUITES)
def test_structured_random_suites_load_or_fail_with_the_documented_error(data):
    check(to_toml(data))


@settings(max_examples=300, deadline=2000)
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_fails_with_the_documented_error(text):
    check(text)


def test_strings_that_look_like_code_are_only_strings(tmp_path):
    marker = tmp_path / "pwned"
    text = (f'[suite]\nvariants = ["__import__(\'os\').system(\'touch {marker}\')"]\n'
            "[sweep]\nseq_len = [64]\n")
    try:
        expand(parse_suite(text, "evil.toml"), REGISTRY)
    except AttnbenchError as error:
        assert "unknown variant" in str(error)
    assert not marker.exists()

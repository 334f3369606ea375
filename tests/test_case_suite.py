"""Cases and suites: stable ids, cartesian expansion, and errors that name the file and key."""

from __future__ import annotations

import pytest

from attnbench.core.case import Case
from attnbench.core.errors import SuiteError, UnknownVariantError
from attnbench.core.registry import default_registry
from attnbench.plan.suite import builtin_suite_names, expand, load_suite, parse_suite

SUITE = """
[suite]
name = "t"
variants = ["naive", "sdpa-math"]
[defaults]
heads = 2
head_dim = 16
[sweep]
seq_len = [128, 32, 64]
causal = [false, true]
dtype = ["fp32", "bf16"]
"""


def test_case_id_is_stable_and_canonical():
    a = Case(variant="naive", seq_len=128, params={"b": 1, "a": 2})
    b = Case.from_dict(a.to_dict())
    assert a == b and a.id == b.id
    assert a.kv_len == 128 and list(a.params) == ["a", "b"]
    assert Case(variant="naive", seq_len=128, kv_len=128).id == Case(variant="naive", seq_len=128).id
    assert Case(variant="naive", seq_len=128, dtype="bf16").dtype == "bfloat16"
    assert a.id != Case(variant="naive", seq_len=256).id
    assert a.config_key == Case(variant="naive", seq_len=4096, params={"a": 2, "b": 1}).config_key
    assert a.label == "naive-cpu-float32-full-fwd-B1H8N128d64-a2-b1"


@pytest.mark.parametrize("field,value", [("seq_len", 0), ("heads", -1), ("batch", True), ("mode", "bwd"),
                                         ("device", "tpu"), ("dtype", "int8")])
def test_case_rejects_bad_values(field, value):
    with pytest.raises(ValueError):
        Case(**{"variant": "naive", "seq_len": 64, field: value})


def test_suite_expands_to_the_cartesian_product_lengths_innermost():
    cases = expand(parse_suite(SUITE, "t.toml"), default_registry())
    assert len(cases) == 2 * 3 * 2 * 2
    assert [c.seq_len for c in cases[:3]] == [32, 64, 128]
    assert {c.dtype for c in cases} == {"float32", "bfloat16"}
    assert {(c.heads, c.head_dim) for c in cases} == {(2, 16)}
    assert len({c.id for c in cases}) == len(cases)
    assert [c.variant for c in cases[:12]] == ["naive"] * 12


def test_builtin_suites_load_and_expand():
    assert "quick" in builtin_suite_names()
    for name in builtin_suite_names():
        suite = load_suite(name)
        assert expand(suite, default_registry()), name


@pytest.mark.parametrize("text,needle", [
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\nbogus=[1]", "unknown key 'sweep.bogus'"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\n[defaults]\nheads='8'", "key 'defaults.heads' must be an integer"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[0]", "key 'sweep.seq_len[0]' must be a positive integer"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\ndtype=['fp8']", "unknown dtype 'fp8'"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=64", "key 'sweep.seq_len' must be a non-empty list"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\n[measure]\nbudget_s=-1", "key 'measure.budget_s'"),
    ("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\n[sweep.x]\ny=1", "unknown key 'sweep.x'"),
    ("[suite]\nvariants=['naive']", "no sequence length"),
    ("[suite]\nvariant=['naive']", "unknown key 'suite.variant' (did you mean: variants?)"),
    ("[suite\n", "not valid TOML"),
])
def test_suite_errors_name_the_file_and_key(text, needle):
    with pytest.raises(SuiteError) as error:
        parse_suite(text, "my-suite.toml")
    assert "my-suite.toml" in str(error.value)
    assert needle in str(error.value)


def test_unknown_variant_suggests_close_names():
    suite = parse_suite("[suite]\nvariants=['naiv']\n[sweep]\nseq_len=[64]", "s.toml")
    with pytest.raises(UnknownVariantError, match=r"unknown variant 'naiv' \(did you mean: naive"):
        expand(suite, default_registry())


def test_unknown_knob_is_named():
    suite = parse_suite("[suite]\nvariants=['naive']\n[sweep]\nseq_len=[64]\n[params.naive]\nwindow=[4]", "s.toml")
    with pytest.raises(SuiteError, match="key 'params.naive.window': variant 'naive' has no knob 'window'"):
        expand(suite, default_registry())


def test_suite_file_that_does_not_exist(tmp_path):
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(str(tmp_path / "nope.toml"))
    with pytest.raises(SuiteError, match="no built-in suite 'quik' \\(did you mean: quick"):
        load_suite("quik")


def test_per_variant_overrides_replace_the_sweep_for_that_variant():
    text = SUITE + "\n[overrides.naive]\nseq_len = [16]\ndtype = ['fp64']\n[params.sdpa-math]\n"
    suite = parse_suite(text.replace("[params.sdpa-math]\n", ""), "t.toml")
    cases = expand(suite, default_registry())
    naive = [c for c in cases if c.variant == "naive"]
    assert {(c.seq_len, c.dtype) for c in naive} == {(16, "float64")} and len(naive) == 2
    assert len([c for c in cases if c.variant == "sdpa-math"]) == 12


def test_cli_overrides_narrow_variants_and_lengths_everywhere():
    from attnbench.plan.suite import with_overrides

    text = SUITE + "\n[overrides.naive]\nseq_len = [16]\n"
    suite = with_overrides(parse_suite(text, "t.toml"), variants=["sdpa-math"], seq_lens=[8])
    assert {(c.variant, c.seq_len) for c in expand(suite, default_registry())} == {("sdpa-math", 8)}
    suite = with_overrides(parse_suite(text, "t.toml"), seq_lens=[8])
    assert {c.seq_len for c in expand(suite, default_registry())} == {8}
    bad = text + "[overrides.nope]\nseq_len = [1]\n"
    with pytest.raises(SuiteError, match="key 'overrides.nope' names a variant the suite does not run"):
        expand(parse_suite(bad, "t.toml"), default_registry())

"""Knobs are declared once and reasons are only appended.

One `Knob` declaration drives a case's unsupported reasons, a suite's errors,
``--param`` parsing and ``attnbench list``. Every variant's reasons are its
base class's followed by its own: no subclass removes, rewords or repeats a
sentence the base class gave, checked on probe cases and in the source.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attnbench import Case, Knob, Variant
from attnbench.core.case import DTYPES
from attnbench.core.errors import SuiteError
from attnbench.core.registry import Registry, default_registry
from attnbench.measure.profiling import ParamError, parse_params
from attnbench.plan.suite import expand, parse_suite

REGISTRY = default_registry()
VARIANTS_DIR = Path(__file__).resolve().parent.parent / "variants"
SMALL = dict(batch=1, heads=2, seq_len=64, head_dim=16)


# ------------------------------------------------------------------ the Knob itself

def test_knob_says_what_it_accepts():
    features = Knob(int, default=256, minimum=1, doc="random features")
    assert features.expected == "an integer >= 1"
    assert [features.accepts(v) for v in (1, 256, 0, -3, 2.0, True, "8", None)] == [
        True, True, False, False, False, False, False, False]
    assert Knob(int, default=3, minimum=0, maximum=8).expected == "an integer from 0 to 8"
    assert Knob(float, default=0.5, maximum=1).expected == "a number <= 1"
    score = Knob(str, default="general", choices=["general", "dot"])
    assert score.choices == ("general", "dot") and score.expected == "one of 'general', 'dot'"
    assert score.accepts("dot") and not score.accepts("cosine") and not score.accepts(1)
    flag = Knob(bool, default=False)
    assert flag.expected == "true or false" and flag.accepts(True) and not flag.accepts(1)


def test_float_knob_holds_integers_as_floats_and_refuses_non_finite():
    scale = Knob(float, default=1, minimum=0)
    assert scale.default == 1.0 and isinstance(scale.default, float)
    assert scale.coerce(2) == 2.0 and isinstance(scale.coerce(2), float)
    assert not scale.accepts(float("nan")) and not scale.accepts(float("inf")) and not scale.accepts(-0.5)
    with pytest.raises(ValueError, match="must be a number >= 0, not -1"):
        scale.coerce(-1)


def test_knob_parses_command_line_text():
    assert Knob(int, default=8, minimum=1).parse(" 64 ") == 64
    assert Knob(float, default=1.0).parse("2.5e-1") == 0.25
    assert [Knob(bool, default=False).parse(t) for t in ("true", "ON", "1", "no", "False", "0")] == [
        True, True, True, False, False, False]
    assert Knob(str, default="general", choices=("general", "dot")).parse("dot") == "dot"
    for knob, text, expected in [(Knob(int, default=8, minimum=1), "0", "expected an integer >= 1"),
                                 (Knob(int, default=8), "8.5", "expected an integer"),
                                 (Knob(float, default=1.0), "nan", "expected a number"),
                                 (Knob(bool, default=False), "maybe", "expected true or false"),
                                 (Knob(str, default="a", choices=("a", "b")), "c", "expected one of 'a', 'b'")]:
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            knob.parse(text)


@pytest.mark.parametrize("declaration, error, message", [
    (lambda: Knob(list, default=[]), TypeError, "type must be int, float, bool or str"),
    (lambda: Knob(int, default=0, minimum=1), ValueError, "default must be an integer >= 1, not 0"),
    (lambda: Knob(str, default="x", minimum=1), TypeError, "str knob cannot have a minimum"),
    (lambda: Knob(int, default=1, minimum=4, maximum=2), ValueError, "minimum 4 is above its maximum 2"),
    (lambda: Knob(str, default="a", choices=("a", 1)), TypeError, "choices must be a non-empty sequence of str"),
], ids=["type", "default", "bounds-on-str", "empty-range", "choices"])
def test_a_bad_declaration_is_refused(declaration, error, message):
    with pytest.raises(error, match=message):
        declaration()


def test_knob_of_a_plain_default_and_to_dict():
    assert Knob.of(3) == Knob(int, default=3) and Knob.of("dot") == Knob(str, default="dot")
    assert Knob.of(True).type is bool and Knob.of(0.5).type is float
    with pytest.raises(TypeError, match="declare it as Knob"):
        Knob.of([1, 2])
    spec = Knob(int, default=256, minimum=1, doc="m").to_dict()
    assert spec == {"type": "int", "default": 256, "minimum": 1, "maximum": None, "choices": None, "doc": "m"}
    assert json.loads(json.dumps(spec)) == spec


# --------------------------------------------------------- the Variant contract

class _Knobbed(Variant):
    name = "test-knobbed"
    knobs = {"window": Knob(int, default=16, minimum=1, maximum=1024, doc="half-width"),
             "score": Knob(str, default="dot", choices=("dot", "general")),
             "scale": Knob(float, default=1.0, minimum=0.0)}


class _Legacy(Variant):
    name = "test-legacy"
    params = {"window": 8, "mode": "plain", "fast": True}


class _LegacyChild(_Legacy):
    name = "test-legacy-child"


def test_params_are_the_defaults_of_the_knobs():
    assert _Knobbed.params == {"window": 16, "score": "dot", "scale": 1.0}
    with pytest.raises(TypeError):
        _Knobbed.params["window"] = 3                  # derived, read-only
    case = _Knobbed().probe_case("cpu")
    assert case.params == {"scale": 1.0, "score": "dot", "window": 16}
    assert _Knobbed().knob_values(Case(variant="test-knobbed", seq_len=8, params={"window": 4})) == {
        "window": 4, "score": "dot", "scale": 1.0}


def test_plugins_that_declare_plain_params_still_work():
    assert _Legacy.knobs == {"window": Knob(int, default=8), "mode": Knob(str, default="plain"),
                             "fast": Knob(bool, default=True)}
    assert _Legacy.params == {"window": 8, "mode": "plain", "fast": True}
    assert _LegacyChild.knobs is _Legacy.knobs and _LegacyChild.params == _Legacy.params
    legacy = _Legacy()
    assert not legacy.unsupported_reasons(Case(variant="test-legacy", seq_len=8, params={"window": 99}))
    assert legacy.unsupported_reasons(Case(variant="test-legacy", seq_len=8, params={"window": "99"})) == [
        "the knob window must be an integer, not '99'"]


def test_declaring_both_knobs_and_params_is_an_error():
    with pytest.raises(TypeError, match="declare `knobs`"):
        class _Both(Variant):
            knobs = {"a": Knob(int, default=1)}
            params = {"a": 1}
    with pytest.raises(TypeError, match="_BadLegacy: knob 'a': a knob's default must be an int, float, bool or str"):
        class _BadLegacy(Variant):
            params = {"a": None}


def test_knob_values_out_of_bounds_or_of_the_wrong_type_are_reasons():
    variant = _Knobbed()
    case = Case(variant="test-knobbed", seq_len=8, params={"window": 0, "score": "cosine", "scale": 2})
    assert variant.unsupported_reasons(case) == [
        "the knob window must be an integer from 1 to 1024, not 0",
        "the knob score must be one of 'dot', 'general', not 'cosine'",
    ]
    case = Case(variant="test-knobbed", seq_len=8, params={"window": True, "scale": "big", "span": 3})
    assert variant.unsupported_reasons(case) == [
        "has no knob span (knobs: window, score, scale)",
        "the knob window must be an integer from 1 to 1024, not True",
        "the knob scale must be a number >= 0.0, not 'big'",
    ]


def bad_values(knob: Knob) -> list:
    """Values a knob must refuse, made from its own declaration."""
    values = [None, [knob.default]]
    values.append("text" if knob.type is not str else 3)
    if knob.minimum is not None:
        values.append(knob.minimum - 1)
    if knob.maximum is not None:
        values.append(knob.maximum + 1)
    if knob.choices is not None and knob.type is str:
        values.append("".join(knob.choices) + "-not-a-choice")
    if knob.type is int:
        values += [True, float(knob.default) + 0.5]
    return values


KNOBBED = [(name, knob) for name in REGISTRY.names() for knob in REGISTRY.get(name).knobs]


@pytest.mark.parametrize(("name", "knob"), KNOBBED, ids=[f"{n}.{k}" for n, k in KNOBBED])
def test_every_builtin_knob_is_checked_by_its_declaration(name, knob):
    variant = REGISTRY.get(name)
    spec = variant.knobs[knob]
    assert spec.doc, f"{name}.{knob} has no doc for 'attnbench list'"
    ok = Case(variant=name, params=dict(variant.params), **SMALL)
    assert not any("knob" in r for r in variant.unsupported_reasons(ok))
    for value in bad_values(spec):
        case = Case(variant=name, params={**variant.params, knob: value}, **SMALL)
        reasons = variant.unsupported_reasons(case)
        assert f"the knob {knob} must be {spec.expected}, not {value!r}" in reasons, (value, reasons)
        assert sum(knob in r for r in reasons) == 1, reasons


# ---------------------------------------------------------- suites, --param, list

SUITE = """
[suite]
variants = ["performer", "luong-local"]
[sweep]
seq_len = [64]
"""


@pytest.mark.parametrize("params, key, expected", [
    ("[params.performer]\nfeatures = [64, 0]", "'params.performer.features[1]'", "an integer >= 1, got 0"),
    ("[params.performer]\nfeatures = 'many'", "'params.performer.features'", "an integer >= 1, got 'many'"),
    ("[params.performer]\nfeatures = 64.0", "'params.performer.features'", "an integer >= 1, got 64.0"),
    ("[params.luong-local]\nscore = ['dot', 'cosine']", "'params.luong-local.score[1]'",
     "one of 'general', 'dot', got 'cosine'"),
    ("[params.luong-local]\nwindow = true", "'params.luong-local.window'", "an integer >= 1, got True"),
])
def test_suite_knob_values_are_checked_against_the_declaration(params, key, expected):
    suite = parse_suite(SUITE + params, "bench/my-suite.toml")
    with pytest.raises(SuiteError) as error:
        expand(suite, REGISTRY)
    message = str(error.value)
    assert message.startswith(f"bench/my-suite.toml: key {key} must be {expected}: the knob "), message
    assert "default" in message


def test_suite_knob_values_fill_cases():
    suite = parse_suite(SUITE + "[params.performer]\nfeatures = [64, 128]\n[params.luong-local]\nscore = 'dot'",
                        "s.toml")
    cases = expand(suite, REGISTRY)
    assert sorted(c.params["features"] for c in cases if c.variant == "performer") == [64, 128]
    assert [c.params for c in cases if c.variant == "luong-local"] == [
        {"chunk": 0, "predictor_dim": 64, "score": "dot", "window": 32}]


def test_suite_float_knob_values_are_floats():
    registry = Registry(variants={"test-knobbed": _Knobbed()}, failures=(), origins={})
    suite = parse_suite("[suite]\nvariants=['test-knobbed']\n[sweep]\nseq_len=[8]\n[params.test-knobbed]\n"
                        "scale = [1, 0.5]", "s.toml")
    assert [c.params["scale"] for c in expand(suite, registry)] == [1.0, 0.5]
    assert all(isinstance(c.params["scale"], float) for c in expand(suite, registry))


def test_a_knob_under_overrides_points_to_params():
    with pytest.raises(SuiteError, match=r"s.toml: unknown key 'overrides.performer.features'.*"
                                         r"a variant's knobs go in \[params.performer\]"):
        parse_suite(SUITE + "[overrides.performer]\nfeatures = [64]", "s.toml")


def test_param_text_is_parsed_by_the_variants_knobs():
    local = REGISTRY.get("luong-local").knobs
    assert parse_params(["window=8", "score=dot", "chunk=0"], local, "luong-local") == {
        "window": 8, "score": "dot", "chunk": 0}
    for pair, message in [("window=0", "--param window=0: expected an integer >= 1 (the default is 32, D, the"),
                          ("window=wide", "--param window=wide: expected an integer >= 1"),
                          ("score=cosine", "--param score=cosine: expected one of 'general', 'dot'"),
                          ("chunk=-1", "--param chunk=-1: expected an integer >= 0")]:
        with pytest.raises(ParamError) as error:
            parse_params([pair], local, "luong-local")
        assert str(error.value).startswith(message), str(error.value)


def test_list_shows_every_knob_with_its_default_bounds_and_doc():
    from attnbench.cli.main import main

    result = CliRunner().invoke(main, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)["variants"]}
    for name in REGISTRY.names():
        variant = REGISTRY.get(name)
        assert rows[name]["params"] == dict(variant.params)
        assert rows[name]["knobs"] == {k: spec.to_dict() for k, spec in variant.knobs.items()}
    assert rows["performer"]["knobs"]["features"] == {
        "type": "int", "default": 256, "minimum": 1, "maximum": None, "choices": None,
        "doc": REGISTRY.get("performer").knobs["features"].doc}
    table = CliRunner().invoke(main, ["list", "--verbose"])
    assert table.exit_code == 0, table.output
    assert "features=256 (int >= 1): m, the number of random features" in table.output
    assert "score=general (str in general|dot)" in table.output
    assert "[p − D, p + D]" in table.output          # knob docs are text, not rich markup


# ------------------------------------------------------- reasons are only appended

def reasons_by_level(variant: Variant, case: Case) -> list[tuple[type, list[str]]]:
    """(class, its reasons) for each class in the MRO that defines unsupported_reasons, base first."""
    levels = []
    for cls in reversed(type(variant).__mro__):
        if "unsupported_reasons" in cls.__dict__:
            levels.append((cls, cls.unsupported_reasons(variant, case)))
    return levels


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9=<>]+", " ", text.lower()).strip()


def near_duplicates(a: str, b: str) -> bool:
    x, y = _normal(a), _normal(b)
    return x in y or y in x or difflib.SequenceMatcher(None, x, y).ratio() >= 0.8


def restated_topics(case: Case, reasons: list[str]) -> list[str]:
    """Topics (the refused dtype, the refused device) said by more than one reason."""
    other = {"cpu": "cuda", "cuda": "cpu"}[case.device]
    topics = {
        "dtype": re.compile(rf"\bnot {case.dtype}\b"),
        "device": re.compile(rf"\bnot on {case.device}\b|\bno {case.device} (kernel|implementation)\b"
                             rf"|\b{other}[- ]only\b|\b{other} only\b", re.IGNORECASE),
    }
    return [topic for topic, pattern in topics.items() if sum(bool(pattern.search(r)) for r in reasons) > 1]


def probe_cases(name: str) -> list[Case]:
    variant = REGISTRY.get(name)
    shapes = [dict(), dict(causal=True, mode="fwd_bwd"), dict(kv_len=32, causal=True), dict(head_dim=512),
              dict(head_dim=12, mode="fwd_bwd")]
    cases = [Case(variant=name, device=device, dtype=dtype, params=dict(variant.params), **{**SMALL, **shape})
             for device in ("cpu", "cuda") for dtype in DTYPES for shape in shapes]
    for knob, spec in variant.knobs.items():
        cases.append(Case(variant=name, params={**variant.params, knob: bad_values(spec)[-1]}, **SMALL))
    cases.append(Case(variant=name, params={**variant.params, "no_such_knob": 1}, **SMALL))
    return cases


def check_only_appended(variant: Variant, case: Case) -> list[str]:
    """Every way `variant`'s reasons on `case` break the rule; empty when they keep it."""
    problems = []
    levels = reasons_by_level(variant, case)
    for (_, inherited), (cls, own) in zip(levels, levels[1:], strict=False):
        if own[:len(inherited)] != inherited:
            problems.append(f"{cls.__name__} changed its base's reasons {inherited} into {own}")
            continue
        for new in own[len(inherited):]:
            problems += [f"{cls.__name__} restates {old!r} as {new!r}" for old in inherited if near_duplicates(old, new)]
    reasons = levels[-1][1]
    if len(set(reasons)) != len(reasons):
        problems.append(f"duplicate reasons {reasons}")
    problems += [f"{topic} said twice: {reasons}" for topic in restated_topics(case, reasons)]
    return problems


@pytest.mark.parametrize("name", REGISTRY.names())
def test_no_variant_removes_rewords_or_repeats_a_reason(name):
    variant = REGISTRY.get(name)
    for case in probe_cases(name):
        assert not check_only_appended(variant, case), (case.label, check_only_appended(variant, case))


class _OldStyleCudaOnly(Variant):
    """How variants said 'CUDA only' before the base class had `device_reason`, minus their filtering."""

    name = "test-old-style"
    devices = ("cuda",)
    dtypes = ("float16",)
    supports_cross = False

    def unsupported_reasons(self, case):
        reasons = super().unsupported_reasons(case)
        if case.device == "cpu":
            reasons.append("this is a CUDA-only kernel; it has no CPU implementation")
        if case.dtype != "float16":
            reasons.append(f"the kernel takes float16 inputs, not {case.dtype}")
        if case.kv_len != case.seq_len:
            reasons.append("is self-attention: needs kv_len == seq_len")
        return reasons


def test_the_check_catches_a_subclass_that_restates_its_base():
    problems = check_only_appended(_OldStyleCudaOnly(), Case(variant="test-old-style", kv_len=32, **SMALL))
    assert any("restates 'needs kv_len == seq_len'" in p for p in problems), problems
    assert any(p.startswith("dtype said twice") for p in problems), problems
    assert any(p.startswith("device said twice") for p in problems), problems


def test_reasons_are_worded_by_base_class_attributes():
    cases = {"flash-attn": Case(variant="flash-attn", **SMALL),
             "sdpa-efficient": Case(variant="sdpa-efficient", **SMALL),
             "longformer": Case(variant="longformer", kv_len=32, **{**SMALL, "seq_len": 64})}
    flash = REGISTRY.get("flash-attn").unsupported_reasons(cases["flash-attn"])
    assert "flash-attn is a CUDA-only kernel; it has no CPU implementation" in flash
    assert "flash-attn takes float16 or bfloat16 inputs, not float32" in flash
    assert not any(r.startswith(("runs on", "supports dtypes")) for r in flash)
    assert REGISTRY.get("sdpa-efficient").unsupported_reasons(cases["sdpa-efficient"]) == [
        "PyTorch's memory-efficient SDPA backend has no CPU kernel (CUDA only)"]
    longformer = REGISTRY.get("longformer")
    assert longformer.unsupported_reasons(Case(variant="longformer", params=dict(longformer.params), kv_len=32,
                                               **SMALL)) == [
        "is self-attention over one sequence: needs kv_len == seq_len"]


BACKWARD_224 = "flash-attn's backward with head_dim > 192 needs an A100/A800 or H100/H800 (compute capability 8.0 or 9.0)"


@pytest.mark.parametrize("capability, expected, flash_expected", [
    ((7, 5), ["needs compute capability 8.0 or newer; this GPU (Tesla T4) has 7.5"], None),
    ((8, 6), [], [BACKWARD_224]),
    ((9, 0), [], []),
])
def test_minimum_cuda_capability_is_one_base_class_sentence(monkeypatch, capability, expected, flash_expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    case = Case(variant="sdpa-cudnn", device="cuda", dtype="float16", **SMALL)
    assert REGISTRY.get("sdpa-cudnn").unsupported_reasons(case) == expected
    flash = REGISTRY.get("flash-attn").unsupported_reasons(Case(variant="flash-attn", device="cuda", dtype="float16",
                                                                mode="fwd_bwd", **{**SMALL, "head_dim": 224}))
    assert [r for r in flash if "compute capability" in r] == (expected if flash_expected is None else flash_expected)


def _is_reasons(node: ast.AST) -> bool:
    """A name or attribute such as `reasons`, `self._reasons`, or a call of `unsupported_reasons`."""
    if isinstance(node, ast.Name):
        return "reason" in node.id
    if isinstance(node, ast.Attribute):
        return "reason" in node.attr
    if isinstance(node, ast.Call):
        return _is_reasons(node.func)
    return False


def filtering_in(source: str) -> list[str]:
    """Lines of `source` that remove, replace or filter sentences of a reasons list."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [
            node.target] if isinstance(node, ast.AugAssign) and not isinstance(node.op, ast.Add) else []
        if any(isinstance(t, ast.Subscript) and _is_reasons(t.value) for t in targets) or (
                isinstance(node, ast.Delete) and any(_is_reasons(t) for t in targets)):
            found.append(f"line {node.lineno}: assigns into or deletes from a reasons list")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("remove", "pop", "clear", "insert", "sort", "reverse")
                and _is_reasons(node.func.value)):
            found.append(f"line {node.lineno}: {node.func.attr}() on a reasons list")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "filter" and any(
                _is_reasons(a) for a in node.args):
            found.append(f"line {node.lineno}: filter() over a reasons list")
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)) and any(
                g.ifs and _is_reasons(g.iter) for g in node.generators):
            found.append(f"line {node.lineno}: a comprehension that filters a reasons list")
    return found


def test_the_source_check_finds_the_old_filters():
    old = ("reasons[:] = [r for r in reasons if not r.startswith('runs on')]\n"
           "reasons = [r for r in reasons if r != 'needs kv_len == seq_len']\n"
           "reasons.remove('has no causal form')\n"
           "own = list(filter(str.strip, super().unsupported_reasons(case)))\n")
    assert len(filtering_in(old)) == 5, filtering_in(old)
    assert filtering_in("reasons = super().unsupported_reasons(case)\nreasons.append('x')\nreasons += more\n") == []


@pytest.mark.parametrize("path", sorted(VARIANTS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_variant_module_filters_or_removes_reasons(path):
    source = path.read_text(encoding="utf-8")
    assert not filtering_in(source), filtering_in(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "unsupported_reasons":
            calls_super = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                              and n.func.attr == "unsupported_reasons" and isinstance(n.func.value, ast.Call)
                              and isinstance(n.func.value.func, ast.Name) and n.func.value.func.id == "super"
                              for n in ast.walk(node))
            assert calls_super, f"{path.name} line {node.lineno}: unsupported_reasons does not extend super()'s"

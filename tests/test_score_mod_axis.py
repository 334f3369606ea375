"""The `score_mod` axis: ALiBi and soft-capping, one function for references, kernels and masks."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_suites import check_kind_axis

from attnbench.attention.flops import attention_flops
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.kinds.score_mods import SCORE_MODS, alibi_slopes, case_score_mod, score_bias
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)


def by_definition(case: Case) -> torch.Tensor:
    """The float64 output written from the formulas, one head and one (query, key) pair at a time."""
    q, k, v = make_inputs(case).tensors()
    q, k, v = q.double()[0], k.double()[0], v.double()[0]             # (H, N, d), (Hkv, M, d), (Hkv, M, dv)
    n, m, heads = case.seq_len, case.kv_len, case.heads
    groups = heads // case.kv_heads
    spec = SCORE_MODS.parse(case.score_mod)
    out = torch.zeros(heads, n, v.shape[-1], dtype=torch.float64)
    for h in range(heads):
        slope = 2.0 ** (-8.0 * (h + 1) / heads)                     # H a power of two in these tests
        for i in range(n):
            position = i + m - n
            scores = []
            for j in range(m):
                s = float(q[h, i] @ k[h // groups, j]) / math.sqrt(case.head_dim)
                if spec.name == "alibi":
                    s -= slope * abs(position - j)
                elif spec.name == "softcap":
                    s = spec.arg * math.tanh(s / spec.arg)
                if case.causal and j > position:
                    s = -math.inf
                scores.append(s)
            weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
            out[h, i] = weights @ v[h // groups]
    return out[None]


def test_parse_and_case_validation():
    assert SCORE_MODS.parse("SoftCap:30.0").text == "softcap:30"
    assert SCORE_MODS.parse("softcap:2.5").text == "softcap:2.5"
    assert SCORE_MODS.parse("alibi").text == "alibi"
    for bad, message in [("relative", "unknown score_mod"), ("softcap", "needs a number"),
                         ("softcap:-1", "positive finite"), ("alibi:2", "takes no value")]:
        with pytest.raises(ValueError, match=message):
            Case(variant="naive", seq_len=16, score_mod=bad)
    case = Case(variant="naive", seq_len=16, score_mod="softcap:30")
    assert case.label.endswith("-softcap30") and case.id != Case(variant="naive", seq_len=16).id
    assert Case(variant="naive", seq_len=16, score_mod="none").id == Case(variant="naive", seq_len=16).id


def test_alibi_slopes_are_the_papers():
    assert alibi_slopes(8) == [2.0 ** -(i + 1) for i in range(8)]       # 1/2, 1/4, ..., 1/256
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads.
    assert alibi_slopes(12) == alibi_slopes(8) + [2.0 ** (-0.5 * (2 * i + 1)) for i in range(4)]


@pytest.mark.parametrize("score_mod", ["alibi", "softcap:2"])
@pytest.mark.parametrize("causal", [False, True])
def test_the_reference_is_the_formula(score_mod, causal):
    case = Case(variant="naive", seq_len=6, kv_len=9, heads=4, kv_heads=2, head_dim=8, causal=causal,
                score_mod=score_mod, qk_std=2.0, dtype="float64")
    out = default_registry().get("naive").reference(case, make_inputs(case))
    assert torch.allclose(out, by_definition(case), atol=1e-12)


def test_alibi_bias_is_the_mod_applied_to_zero():
    case = Case(variant="naive", seq_len=4, kv_len=6, heads=2, score_mod="alibi")
    bias = score_bias(case, dtype=torch.float64)                        # (H, N, M)
    assert bias.shape == (2, 4, 6)
    assert bias[0, 0].tolist() == [-abs(2 - j) / 16 for j in range(6)]   # query 0 sits at key 2; slopes 1/16, 1/256
    assert bias[1, 3, 5] == 0 and bias[1, 3, 0] == -5 / 256
    mod = case_score_mod(case)
    assert float(mod(torch.tensor(1.0), None, torch.tensor(1), torch.tensor(3), torch.tensor(0))) == 1 - 5 / 256
    with pytest.raises(ValueError, match="not an additive bias"):
        score_bias(Case(variant="naive", seq_len=4, score_mod="softcap:5"))


@pytest.mark.parametrize("variant", ["naive", "sdpa-math", "sdpa-flash"])
@pytest.mark.parametrize("score_mod", ["alibi", "softcap:1.5"])
@pytest.mark.parametrize("mask", ["none", "sliding_window:8"])
def test_exact_variants_compute_the_modded_function(variant, score_mod, mask):
    variant_object = default_registry().get(variant)
    case = Case(variant=variant, seq_len=40, kv_len=56, heads=4, kv_heads=2, head_dim=16, causal=True,
                mask=mask, score_mod=score_mod, qk_std=3.0)
    reasons = variant_object.unsupported_reasons(case)
    if score_mod.startswith("softcap") and variant.startswith("sdpa"):
        assert any("cannot express softcap" in r for r in reasons), reasons
        result = measure_case(case, variant_object, FAST)
        assert result.status == "unsupported" and "softcap" in result.reason
        return
    result = measure_case(case, variant_object, FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    assert result.flops == attention_flops(case)
    plain = measure_case(Case(**{**case.to_dict(), "score_mod": "none"}), variant_object, FAST)
    assert plain.accuracy.ok and plain.flops == result.flops    # a score mod adds no products


def test_the_mod_changes_the_output():
    naive = default_registry().get("naive")
    base = Case(variant="naive", seq_len=32, heads=2, head_dim=8, qk_std=3.0, dtype="float64")
    plain = naive.reference(base, make_inputs(base))
    for mod in ("alibi", "softcap:1"):
        case = Case(**{**base.to_dict(), "score_mod": mod})
        assert (naive.reference(case, make_inputs(case)) - plain).abs().max() > 0.05, mod


def test_variants_without_score_mods_say_why_and_suites_sweep_it():
    check_kind_axis("score_mod", ["none", "alibi", "softcap:30"],
                    refused=("performer", "alibi", "has no alibi score mod"), unknown="bias")


@pytest.mark.e2e
def test_flex_takes_every_score_mod_with_grouped_heads(flex):
    for mod, mask in [("alibi", "none"), ("softcap:2", "sliding_window:16")]:
        case = Case(variant="flex", seq_len=128, heads=4, kv_heads=2, head_dim=32, causal=True, mask=mask,
                    score_mod=mod, qk_std=3.0)
        result = measure_case(case, flex, FAST)
        assert result.status == "ok" and result.accuracy.ok is True, (mod, result.reason, result.accuracy)


def paper_slopes(heads: int) -> list[float]:
    """ALiBi's slopes as the paper's code writes them (Press et al., ofirpress/attention_with_linear_biases), in float64.

    A geometric sequence starting at 2^(-8/n) with that ratio for n a power of two; otherwise the
    closest smaller power's slopes, then every other slope of twice that power (attention-gym's rule).
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + paper_slopes(2 * closest)[0::2][:heads - closest]


def alibi_by_hand(case: Case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float64 softmax(q kᵀ/√d − slope_h·|i + M − N − j|) v with the paper's slopes, written out here."""
    slopes = torch.tensor(paper_slopes(case.heads), dtype=torch.float64)[:, None, None]            # (H, 1, 1)
    position = torch.arange(case.seq_len, dtype=torch.float64)[:, None] + case.kv_len - case.seq_len  # (N, 1)
    distance = (position - torch.arange(case.kv_len, dtype=torch.float64)[None, :]).abs()          # (N, M)
    scores = q @ k.transpose(-2, -1) / math.sqrt(case.head_dim) - slopes * distance                 # (B, H, N, M)
    if case.causal:
        scores = scores.masked_fill(position < torch.arange(case.kv_len)[None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_alibi_slopes_are_the_papers_in_float64():
    for heads in (8, 12, 16, 32):
        assert alibi_slopes(heads) == pytest.approx(paper_slopes(heads), rel=1e-14, abs=0), heads
        case = Case(variant="naive", seq_len=8, heads=heads, score_mod="alibi", dtype="float64")
        bias = score_bias(case, dtype=torch.float64)                                               # (H, N, M)
        distance = (torch.arange(8.0)[:, None] - torch.arange(8.0)[None, :]).abs()
        want = -torch.tensor(paper_slopes(heads), dtype=torch.float64)[:, None, None] * distance
        torch.testing.assert_close(bias, want, rtol=1e-14, atol=0, msg=f"{heads} heads")


@pytest.mark.parametrize("heads", [12, 16, 32])
@pytest.mark.parametrize("variant", ["naive", "sdpa-math", "sdpa-flash"])
def test_float64_alibi_is_the_true_function(variant, heads):
    """float64 cells with ALiBi sit at float64 rounding from the paper's function, their reference too."""
    case = Case(variant=variant, seq_len=48, kv_len=64, heads=heads, head_dim=16, causal=True, score_mod="alibi",
                qk_std=1.0, dtype="float64")
    implementation = default_registry().get(variant)
    inputs = make_inputs(case)
    truth = alibi_by_hand(case, *inputs.tensors())
    out = implementation.prepare(case, inputs)()
    reference = implementation.reference(case, inputs)
    assert float((out - truth).abs().max()) < 1e-13, "the variant"
    assert float((reference - truth).abs().max()) < 1e-13, "its reference"

"""Attention sinks (the `sinks` axis) against the definition, written as a plain loop over rows and keys."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.attention.sinks import rescale_for_sinks, sink_logits, softmax_with_sinks
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs
from attnbench.plan.suite import expand, parse_suite

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False,
                       telemetry=False)


def sink_attention_by_definition(q, k, v, sinks, causal):
    """o_i = Σ_j exp(x_ij) v_j / (exp(s_h) + Σ_j exp(x_ij)), one row at a time, in float64."""
    batch, heads, seq_len, d = q.shape
    out = torch.zeros(batch, heads, seq_len, v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(seq_len):
                keys = range(i + 1) if causal else range(k.shape[-2])
                terms = [math.exp(float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d)) for j in keys]
                denominator = math.exp(float(sinks[h])) + sum(terms)
                out[b, h, i] = sum(t * v[b, h, j] for t, j in zip(terms, keys, strict=True)) / denominator
    return out


def test_the_reference_and_the_lse_rescale_both_match_the_definition():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    sinks = sink_logits(seed=5, heads=3).double()
    for causal in (False, True):
        expected = sink_attention_by_definition(q, k, v, sinks, causal)
        scores = q @ k.transpose(-2, -1) / 2.0                                        # √4
        if causal:
            scores = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
        reference = softmax_with_sinks(scores, sinks) @ v
        plain = torch.softmax(scores, dim=-1) @ v
        rescaled = rescale_for_sinks(plain, torch.logsumexp(scores, dim=-1), sinks)
        torch.testing.assert_close(reference, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rescaled.double(), expected, rtol=1e-6, atol=1e-6)   # the gate runs in float32


def test_sinks_take_weight_from_the_keys_and_a_masked_row_stays_zero():
    scores = torch.tensor([[[[0.0, 0.0], [float("-inf"), float("-inf")]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    weights = softmax_with_sinks(scores, torch.tensor([0.0]))
    torch.testing.assert_close(weights, torch.tensor([[[[1 / 3, 1 / 3], [0.0, 0.0]]]], dtype=torch.float64))
    out = rescale_for_sinks(torch.zeros(1, 1, 2, 3), torch.tensor([[[0.0, float("-inf")]]]), torch.tensor([0.0]))
    assert torch.equal(out, torch.zeros(1, 1, 2, 3))


def test_sink_logits_are_fixed_by_the_seed():
    assert torch.equal(sink_logits(3, 8), sink_logits(3, 8))
    assert not torch.equal(sink_logits(3, 8), sink_logits(4, 8))
    assert sink_logits(3, 8).dtype == torch.float32 and sink_logits(3, 8).shape == (8,)


def sinks_by_definition(case: Case) -> torch.Tensor:
    """The case's float64 output from the formula, one (query, key) pair at a time: causal end-aligned,
    a sliding window of `mask` keys, GQA heads; exp(s_h) in every row's denominator."""
    q, k, v = (t.double()[0] for t in make_inputs(case).tensors())   # (H, N, d), (Hkv, M, d), (Hkv, M, d_v)
    sinks = sink_logits(case.seed, case.heads).double()
    n, m, groups = case.seq_len, case.kv_len, case.heads // case.kv_heads
    window = int(case.mask.partition(":")[2]) if case.mask.startswith("sliding_window") else None
    out = torch.zeros(case.heads, n, v.shape[-1], dtype=torch.float64)
    for h in range(case.heads):
        for i in range(n):
            position = i + m - n
            keys = [j for j in range(m) if not (case.causal and j > position)
                    and not (window is not None and position - j > window)]
            terms = [math.exp(float(q[h, i] @ k[h // groups, j]) / math.sqrt(case.head_dim)) for j in keys]
            numerator = sum((t * v[h // groups, j] for t, j in zip(terms, keys, strict=True)),
                            torch.zeros(v.shape[-1], dtype=torch.float64))
            out[h, i] = numerator / (math.exp(float(sinks[h])) + sum(terms))
    return out[None]


SINK_CASES = [dict(), dict(causal=True, kv_heads=2), dict(causal=True, mask="sliding_window:8"),
              dict(causal=True, seq_len=3, kv_len=40)]


@pytest.mark.parametrize("shape", SINK_CASES, ids=["full", "causal-gqa", "causal-window", "decode"])
def test_the_reference_with_sinks_is_the_formula(shape):
    case = Case(**{"variant": "naive", "seq_len": 24, "heads": 4, "head_dim": 8, "qk_std": 2.0, "dtype": "float64",
                   "sinks": "learned", **shape})
    reference = default_registry().get("naive").reference(case, make_inputs(case))
    torch.testing.assert_close(reference, sinks_by_definition(case), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["naive", "sdpa-math"])
@pytest.mark.parametrize("shape", SINK_CASES, ids=["full", "causal-gqa", "causal-window", "decode"])
def test_variants_with_sinks_compute_the_formula(variant, shape):
    case = Case(**{"variant": variant, "seq_len": 24, "heads": 4, "head_dim": 8, "qk_std": 2.0, "dtype": "float64",
                   "sinks": "learned", **shape})
    implementation = default_registry().get(variant)
    out = implementation.prepare(case, make_inputs(case))()
    torch.testing.assert_close(out, sinks_by_definition(case), rtol=1e-11, atol=1e-11)
    plain = Case(**{**case.to_dict(), "sinks": "none"})
    assert (implementation.prepare(plain, make_inputs(plain))() - out).abs().max() > 1e-3   # the sink takes weight


@pytest.mark.parametrize("variant", ["naive", "sdpa-math"])
def test_a_sinks_cell_is_measured_accurate_forward_and_backward(variant):
    for mode in ("fwd", "fwd_bwd"):
        case = Case(variant=variant, seq_len=64, heads=4, kv_heads=2, head_dim=16, causal=True, mode=mode,
                    mask="sliding_window:16", sinks="learned", qk_std=2.0)
        result = measure_case(case, default_registry().get(variant), FAST)
        assert result.status == "ok" and result.accuracy.ok is True, (mode, result.reason, result.accuracy)


def test_the_sinks_axis_labels_validates_and_says_who_lacks_it():
    case = Case(variant="naive", seq_len=16, sinks="learned")
    assert case.label.endswith("-sinks") and case.id != Case(variant="naive", seq_len=16).id
    assert Case(variant="naive", seq_len=16, sinks="none").id == Case(variant="naive", seq_len=16).id
    with pytest.raises(ValueError, match="sinks must be one of none, learned"):
        Case(variant="naive", seq_len=16, sinks="yes")
    reasons = default_registry().get("sdpa-flash").unsupported_reasons(Case(variant="sdpa-flash", seq_len=16,
                                                                            sinks="learned"))
    assert any("has no attention sinks" in r for r in reasons), reasons
    suite = parse_suite('[suite]\nname = "s"\nvariants = ["naive", "sdpa-flash"]\n[sweep]\nseq_len = [64]\n'
                        'sinks = ["none", "learned"]\n', "s.toml")
    assert sorted((c.variant, c.sinks) for c in expand(suite, default_registry())) == [
        ("naive", "learned"), ("naive", "none"), ("sdpa-flash", "learned"), ("sdpa-flash", "none")]


def test_flex_on_cpu_says_it_has_no_log_sum_exp_for_sinks():
    case = Case(variant="flex", seq_len=128, heads=4, head_dim=32, causal=True, sinks="learned")
    reasons = default_registry().get("flex").unsupported_reasons(case)
    assert any("does not return its log-sum-exp" in r for r in reasons), reasons


@pytest.mark.cuda
def test_flex_with_sinks_through_its_log_sum_exp():
    flex = default_registry().get("flex")
    case = Case(variant="flex", seq_len=128, heads=4, kv_heads=2, head_dim=32, causal=True, mask="sliding_window:32",
                sinks="learned", qk_std=2.0, device="cuda", dtype="bfloat16")
    result = measure_case(case, flex, FAST)
    assert result.status == "ok" and result.accuracy.ok is True, (result.reason, result.accuracy)

"""Longformer under the case's own ``sliding_window:W`` mask computes the function naive computes.

With ``window = W`` and ``global_tokens = 0`` the Longformer pattern is the mask (|i − j| <= W, and
j <= i if causal), so its reference is the exact masked softmax, its FLOPs are naive's, its output
matches naive's for the same inputs, and its error is numerical, not an approximation. A knob that
disagrees with the mask is a reason that says what to set.
"""

from __future__ import annotations

import pytest
import torch
from tiny_suites import measure_accurate, skip_unless_supported

from attnbench import Variant, attention_flops, case_mask_mod, softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs, upcast

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)
REGISTRY = default_registry()
# seq_len 100 is no multiple of any chunk; W = 64 takes half-window chunks, W = 130 spans the whole sequence.
WINDOWS = (1, 7, 24, 64, 130)
# The harness decides "approximation" per case only once Variant has the `approximation(case)` hook.
PER_CASE_APPROXIMATION = hasattr(Variant, "approximation")


def window_case(name: str, window: int, causal: bool, dtype: str = "float32", **fields) -> Case:
    params = {**REGISTRY.get(name).params, "window": window, "global_tokens": 0, **fields.pop("params", {})}
    shape = {"batch": 2, "heads": 2, "seq_len": 100, "head_dim": 16, "qk_std": 0.5, **fields}
    return Case(variant=name, causal=causal, dtype=dtype, mask=f"sliding_window:{window}", params=params, **shape)


def naive_twin(case: Case) -> Case:
    return Case.from_dict({**case.to_dict(), "variant": "naive", "params": {}})


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("window", WINDOWS, ids=[f"w{w}" for w in WINDOWS])
def test_longformer_computes_naives_function_under_the_mask(window, causal):
    longformer, naive = REGISTRY.get("longformer"), REGISTRY.get("naive")
    case = window_case("longformer", window, causal)
    twin = naive_twin(case)
    assert longformer.unsupported_reasons(case) == []

    inputs = make_inputs(case)
    got, want = longformer.prepare(case, inputs)(), naive.prepare(twin, inputs)()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    inputs64 = upcast(inputs)
    reference = longformer.reference(case, inputs64)
    torch.testing.assert_close(reference, naive.reference(twin, inputs64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference, softmax_attention(*inputs64.tensors(), causal=causal,
                                                            mask_mod=case_mask_mod(case)), rtol=0, atol=0)

    assert longformer.flops(case) == naive.flops(twin) == attention_flops(case)
    assert longformer.performed_flops(case) >= longformer.flops(case)        # its padded chunk slots


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("window", (7, 64), ids=["w7", "w64"])
def test_measured_cell_is_ok_and_judged_against_the_masked_softmax(window, causal, dtype):
    case = window_case("longformer", window, causal, dtype)
    result = measure_case(case, REGISTRY.get("longformer"), FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    assert result.accuracy.output.rel_l2_error <= REGISTRY.get("longformer").tolerance(case).rel_l2
    assert result.flops == attention_flops(case)


@pytest.mark.xfail(not PER_CASE_APPROXIMATION, strict=True,
                   reason="harness/measure/cell.py reads the class attribute `approximates`, not a per-case hook")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_under_the_mask_its_error_is_not_an_approximation(causal):
    longformer = REGISTRY.get("longformer")
    case = window_case("longformer", 16, causal)
    assert longformer.approximation(case) is None
    result = measure_case(case, longformer, FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.approx is None


def test_with_no_mask_it_still_approximates_full_softmax():
    longformer = REGISTRY.get("longformer")
    case = Case(variant="longformer", seq_len=100, heads=2, head_dim=16, causal=True,
                params={"window": 16, "global_tokens": 3})
    assert longformer.unsupported_reasons(case) == []
    assert longformer.approximation(case) == longformer.approximates == "softmax_attention"
    inputs64 = upcast(make_inputs(case))
    exact = softmax_attention(*inputs64.tensors(), causal=True)
    assert not torch.allclose(longformer.reference(case, inputs64), exact, atol=1e-3)
    assert longformer.flops(case) < attention_flops(case)                  # the pattern's pairs, not N²/2


MISMATCHED = [
    ({"window": 128}, "with mask sliding_window:256 set window=256 and global_tokens=0, got window=128"),
    ({"window": 256, "global_tokens": 4},
     "with mask sliding_window:256 set window=256 and global_tokens=0, got global_tokens=4"),
    ({"window": 512, "global_tokens": 1},
     "with mask sliding_window:256 set window=256 and global_tokens=0, got window=512, global_tokens=1"),
]


@pytest.mark.parametrize("name", ["longformer", "longformer-flex"])
@pytest.mark.parametrize(("params", "sentence"), MISMATCHED, ids=["window", "global", "both"])
def test_knobs_that_disagree_with_the_mask_say_what_to_set(name, params, sentence):
    variant = REGISTRY.get(name)
    case = Case(variant=name, seq_len=512, heads=2, head_dim=16, mask="sliding_window:256",
                params={**variant.params, **params})
    assert sentence in variant.unsupported_reasons(case)
    assert not variant.supports(case)


def test_a_zero_window_and_cross_attention_give_reasons():
    longformer = REGISTRY.get("longformer")
    zero = Case(variant="longformer", seq_len=64, mask="sliding_window:0", params={"window": 1, "global_tokens": 0})
    assert any("window is at least 1" in r for r in longformer.unsupported_reasons(zero))
    cross = window_case("longformer", 8, True, seq_len=32, kv_len=64)
    assert longformer.unsupported_reasons(cross) == [longformer.cross_reason]
    other = Case(variant="longformer", seq_len=64, mask="document:2", params=dict(longformer.params))
    assert any("has no document mask" in r for r in longformer.unsupported_reasons(other))


@pytest.mark.e2e
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_longformer_flex_computes_naives_function_under_the_mask(causal):
    flex, naive = REGISTRY.get("longformer-flex"), REGISTRY.get("naive")
    case = window_case("longformer-flex", 24, causal)
    skip_unless_supported(flex, case)
    inputs = make_inputs(case)
    torch.testing.assert_close(flex.prepare(case, inputs)(), naive.prepare(naive_twin(case), inputs)(),
                               rtol=1e-5, atol=1e-5)
    assert flex.flops(case) == naive.flops(naive_twin(case)) == attention_flops(case)
    measure_accurate(case, flex, FAST)

"""The Mamba layers' selection weights are learned weights: declared, seeded as Mamba initialises them, trained."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench import AttentionInputs, Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs, upcast
from attnbench.tasks.train import train_recall
from attnbench.variants.mamba import (
    selective_projections,
    selective_scan_sequential,
    ssd_projections,
    ssd_sequential,
)

REGISTRY = default_registry()


def _case(variant: str, **changes) -> Case:
    base = dict(variant=variant, batch=2, heads=2, seq_len=24, head_dim=8, causal=True, mode="fwd", seed=5)
    return Case(**{**base, **changes})


def test_mamba_scan_declares_mambas_selection_weights_with_its_initialisation():
    variant = REGISTRY.get("mamba-scan")
    case = _case("mamba-scan", params={"state_dim": 4})
    declared = variant.learned_weights(case)
    assert {name: w.shape for name, w in declared.items()} == {
        "w_delta_down": (16, 1), "w_delta_up": (1, 16), "delta_bias": (16,), "w_b": (16, 4), "w_c": (16, 4),
        "a_log": (16, 4), "d_skip": (16,)}
    assert {name for name, w in declared.items() if not w.decay} == {"delta_bias", "a_log", "d_skip"}
    w = variant.weights(case, make_inputs(case))
    assert torch.allclose(-torch.exp(w["a_log"]), -torch.arange(1.0, 5.0).expand(16, 4))     # S4D-real
    assert torch.equal(w["d_skip"], torch.ones(16))
    delta0 = torch.nn.functional.softplus(w["delta_bias"])                                  # Δ at zero input
    assert float(delta0.min()) >= 1e-3 * 0.999 and float(delta0.max()) <= 0.1 * 1.001


def test_mamba2_declares_delta_a_and_d_per_head():
    variant = REGISTRY.get("mamba2-ssd")
    case = _case("mamba2-ssd")
    declared = variant.learned_weights(case)
    assert {name: w.shape for name, w in declared.items()} == {
        "w_delta": (2, 8, 1), "delta_bias": (2, 1, 1), "a_log": (2,), "d_skip": (2, 1, 1)}
    a = -torch.exp(variant.weights(case, make_inputs(case))["a_log"])
    assert float(a.max()) <= -1.0 and float(a.min()) >= -16.0


@pytest.mark.parametrize("name", ["mamba-scan", "mamba2-ssd"])
def test_the_reference_is_the_recurrence_plus_the_d_skip_term(name):
    """With D = 0 the layer is the bare recurrence; D adds D ⊙ x exactly (x = v)."""
    variant = REGISTRY.get(name)
    case = _case(name, params={"state_dim": 4} if name == "mamba-scan" else {})
    inputs = upcast(make_inputs(case))
    weights = variant.weights(case, inputs)
    zero = {**weights, "d_skip": torch.zeros_like(weights["d_skip"])}
    half = {**weights, "d_skip": torch.full_like(weights["d_skip"], 0.5)}
    q, k, v = inputs.tensors()
    bare = variant.reference(case, AttentionInputs(q, k, v, weights=zero))
    if name == "mamba-scan":
        y = selective_scan_sequential(*selective_projections(q, k, v, zero))
        want = y.view(2, 24, 2, 8).transpose(1, 2)
    else:
        want = ssd_sequential(*ssd_projections(q, k, v, zero))
    torch.testing.assert_close(bare, want, rtol=0, atol=0)
    torch.testing.assert_close(variant.reference(case, AttentionInputs(q, k, v, weights=half)), bare + 0.5 * v)
    out = variant.prepare(case, AttentionInputs(q, k, v, weights=half))()
    torch.testing.assert_close(out, bare + 0.5 * v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["mamba-scan", "mamba2-ssd"])
def test_training_moves_every_selection_weight(name):
    params = {"state_dim": 2, "chunk": 8} if name == "mamba-scan" else {"chunk": 8}
    case = Case(variant=name, batch=8, heads=2, head_dim=8, seq_len=16, causal=True, mode="fwd_bwd", params=params,
                task="mqar:kv_pairs=2,vocab=16,steps=12,lr=0.01,test_examples=16")
    outcome = train_recall(REGISTRY.get(name), case)
    changes = dict(outcome.weight_change)
    assert set(changes) == set(REGISTRY.get(name).learned_weights(case))
    assert all(math.isfinite(c) and c > 1e-4 for c in changes.values()), changes

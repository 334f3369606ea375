"""Fidelity of attention weights: the three metrics by hand, the row-wise weights, and measured cells."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.attention.masks import case_mask_mod
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.result import Result, Run
from attnbench.core.settings import MeasureSettings
from attnbench.kinds.score_mods import case_score_mod
from attnbench.measure.cell import measure_case
from attnbench.measure.fidelity import (
    KL_FLOOR,
    exact_weights,
    fidelity_rows,
    measure_fidelity,
    takes_rows,
    variant_weights,
    weight_fidelity,
)
from attnbench.measure.inputs import make_inputs, upcast
from attnbench.store import TIDY_COLUMNS, Cell, RunWriter, load_run, now_iso, tidy_frame
from attnbench.variants.longformer import Longformer
from attnbench.variants.performer import LinearAttention, Performer

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)
REGISTRY = default_registry()
FIDELITY_COLUMNS = ("approx_kl", "approx_entropy_ratio", "approx_topk_mass")


def rows_of(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)                        # (R, M)


# --- the metrics by hand -------------------------------------------------------------------------


def test_identical_rows_have_zero_kl_unit_entropy_ratio_and_full_topk_mass():
    weights = torch.softmax(torch.randn(2, 3, 5, 40, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64), dim=-1)
    got = weight_fidelity(weights, weights.clone())
    assert got["approx_kl"] == pytest.approx(0.0, abs=1e-14)
    assert got["approx_entropy_ratio"] == pytest.approx(1.0, rel=1e-12)
    assert got["approx_topk_mass"] == pytest.approx(1.0, rel=1e-12)
    assert (got["rows"], got["top_k"], got["negative_rows"], got["dropped_mass"]) == (5, 32, 0, 0.0)


def test_a_two_key_row_by_hand():
    p, q = rows_of([0.8, 0.2]), rows_of([0.6, 0.4])
    got = weight_fidelity(p, q, top_k=1)
    assert got["approx_kl"] == pytest.approx(0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4), rel=1e-12)
    entropy = lambda *w: -sum(x * math.log(x) for x in w)                # noqa: E731
    assert got["approx_entropy_ratio"] == pytest.approx(entropy(0.6, 0.4) / entropy(0.8, 0.2), rel=1e-12)
    assert got["approx_topk_mass"] == pytest.approx(0.6 / 0.8, rel=1e-12)   # the top key: 0.6 of its 0.8
    both = weight_fidelity(p, q, top_k=5)                                 # k = min(5, M) = 2: both keys
    assert both["top_k"] == 2 and both["approx_topk_mass"] == pytest.approx(0.6 + 0.2, rel=1e-12)


def test_entropy_ratio_of_uniform_and_peaked_rows():
    uniform, peaked = rows_of([0.25] * 4), rows_of([1.0, 0.0, 0.0, 0.0])
    assert weight_fidelity(uniform, peaked)["approx_entropy_ratio"] == 0.0
    assert weight_fidelity(peaked, uniform)["approx_entropy_ratio"] is None   # exact entropy 0: undefined
    softer = rows_of([0.7, 0.1, 0.1, 0.1])
    want = math.log(4) / -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
    assert weight_fidelity(softer, uniform)["approx_entropy_ratio"] == pytest.approx(want, rel=1e-12)
    # ratio of the mean entropies over rows, not the mean of per-row ratios
    two = weight_fidelity(torch.stack([uniform[0], softer[0]]), torch.stack([uniform[0], uniform[0]]))
    h_soft = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
    assert two["approx_entropy_ratio"] == pytest.approx(2 * math.log(4) / (math.log(4) + h_soft), rel=1e-12)


def test_a_dropped_key_costs_the_floor_and_negative_weights_are_clamped():
    got = weight_fidelity(rows_of([1.0, 0.0]), rows_of([0.0, 1.0]))
    assert got["approx_kl"] == pytest.approx(-math.log(KL_FLOOR), rel=1e-12)
    assert got["approx_topk_mass"] == 0.0 and got["dropped_mass"] == 1.0
    clamped = weight_fidelity(rows_of([0.0, 0.5, 0.5]), rows_of([-0.2, 0.6, 0.6]))
    assert clamped["approx_kl"] == pytest.approx(0.0, abs=1e-14) and clamped["negative_rows"] == 1
    assert clamped["approx_topk_mass"] == pytest.approx(1.0)


def test_top_k_mass_over_the_exact_heaviest_keys_and_fully_masked_rows_left_out():
    p = rows_of([0.5, 0.3, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0])
    q = rows_of([0.2, 0.2, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25])
    got = weight_fidelity(p, q, top_k=2)
    assert got["approx_topk_mass"] == pytest.approx(0.4 / 0.8, rel=1e-12)
    assert got["approx_kl"] == pytest.approx(0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.2)
                                             + 2 * 0.1 * math.log(0.1 / 0.3), rel=1e-12)
    # capped per key: weight piled on one key does not make up for the ones it misses
    piled = weight_fidelity(rows_of([0.4, 0.3, 0.3]), rows_of([0.9, 0.05, 0.05]), top_k=1)
    assert piled["approx_topk_mass"] == pytest.approx(1.0)
    assert weight_fidelity(rows_of([0.4, 0.3, 0.3]), rows_of([0.9, 0.05, 0.05]), top_k=2)["approx_topk_mass"] == \
        pytest.approx((0.4 + 0.05) / 0.7, rel=1e-12)
    # a masked key (p = 0) is never among the top keys
    assert weight_fidelity(rows_of([0.6, 0.4, 0.0]), rows_of([0.2, 0.3, 0.5]), top_k=3)["approx_topk_mass"] == \
        pytest.approx(0.5, rel=1e-12)


def test_non_finite_and_mismatched_weights_raise():
    with pytest.raises(ValueError, match="non-finite"):
        weight_fidelity(rows_of([0.5, 0.5]), rows_of([float("nan"), 0.5]))
    with pytest.raises(ValueError, match="differ"):
        weight_fidelity(rows_of([0.5, 0.5]), rows_of([1.0]))


# --- exact weights and row-wise variant weights --------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"causal": True, "mask": "sliding_window:5", "score_mod": "alibi"},
    {"causal": False, "mask": "document:3", "score_mod": "softcap:2"},
    {"causal": True, "kv_heads": 1},
], ids=["window-alibi-causal", "document-softcap", "mqa-causal"])
def test_exact_weights_reproduce_the_masked_softmax_reference(fields):
    case = Case(variant="naive", seq_len=40, heads=2, head_dim=8, **fields)
    inputs = upcast(make_inputs(case))
    rows = torch.tensor([0, 3, 17, 39])
    weights = exact_weights(case, inputs, rows)
    assert weights.shape == (1, 2, 4, 40)
    v = inputs.v.repeat_interleave(2 // inputs.v.shape[1], dim=1)
    expected = softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, mask_mod=case_mask_mod(case),
                                 score_mod=case_score_mod(case))
    torch.testing.assert_close(weights @ v, expected, rtol=1e-12, atol=1e-12)


ROW_CASES = [
    (Performer, {"features": 32}, False), (Performer, {"features": 32}, True), (LinearAttention, {}, True),
    (Longformer, {"window": 6, "global_tokens": 3}, False), (Longformer, {"window": 6, "global_tokens": 3}, True),
]


@pytest.mark.parametrize("cls,knobs,causal", ROW_CASES,
                         ids=[f"{c.name}-{'causal' if causal else 'full'}" for c, _, causal in ROW_CASES])
def test_attention_weights_of_rows_are_the_full_weights_indexed(cls, knobs, causal):
    variant = cls()
    case = Case(variant=variant.name, batch=2, heads=2, seq_len=50, head_dim=8, qk_std=0.5, causal=causal,
                params={**variant.params, **knobs})
    inputs = make_inputs(case)
    rows = torch.tensor([0, 1, 2, 9, 30, 49])
    assert takes_rows(variant)
    full = variant.attention_weights(case, inputs)                        # (B, H, N, N)
    torch.testing.assert_close(variant.attention_weights(case, inputs, rows=rows), full[..., rows, :],
                               rtol=1e-12, atol=1e-15)


def test_a_variant_without_rows_is_asked_for_every_row_and_indexed():
    class NoRows(Performer):
        def attention_weights(self, case, inputs):
            return super().attention_weights(case, inputs)

    variant = NoRows()
    case = Case(variant="performer", seq_len=30, heads=2, head_dim=8, qk_std=0.5, params={"features": 16})
    inputs = make_inputs(case)
    rows = torch.tensor([4, 20])
    assert not takes_rows(variant)
    torch.testing.assert_close(variant_weights(variant, case, inputs, rows), Performer().attention_weights(
        case, inputs, rows=rows), rtol=1e-12, atol=1e-15)


def test_fidelity_rows_thin_the_sample_evenly():
    assert fidelity_rows(10, None).tolist() == list(range(10))
    thinned = fidelity_rows(10_000, None, limit=5)
    assert thinned.tolist() == [0, 2500, 5000, 7499, 9999]
    sample = torch.tensor([3, 8, 40, 41, 90])
    assert fidelity_rows(100, sample, limit=3).tolist() == [3, 40, 90]


def test_measure_fidelity_in_chunks_equals_one_pass(monkeypatch):
    import attnbench.measure.fidelity as fidelity

    variant = Longformer()
    case = Case(variant="longformer", seq_len=64, heads=2, head_dim=8, params={"window": 4, "global_tokens": 1})
    inputs = upcast(make_inputs(case))
    rows = fidelity_rows(64, None)
    whole = measure_fidelity(case, variant, inputs, rows)
    monkeypatch.setattr(fidelity, "CHUNK_BYTES", 2 * 64 * 8 * 5)         # five rows a chunk
    chunked = measure_fidelity(case, variant, inputs, rows)
    assert chunked == pytest.approx(whole, rel=1e-12)
    direct = weight_fidelity(exact_weights(case, inputs, rows), variant.attention_weights(case, inputs))
    assert whole == pytest.approx(direct, rel=1e-12)


# --- measured cells ------------------------------------------------------------------------------


def measured(case: Case, variant=None, settings: MeasureSettings = FAST) -> Result:
    result = measure_case(case, variant or REGISTRY.get(case.variant), settings)
    assert result.status == "ok", result.reason
    return result


def performer_case(features: int) -> Case:
    return Case(variant="performer", seq_len=96, heads=2, head_dim=16, qk_std=0.5,
                params={**REGISTRY.get("performer").params, "features": features})


def test_performer_and_longformer_cells_carry_the_fidelity():
    performer, finer = measured(performer_case(64)), measured(performer_case(256))
    longformer = measured(Case(variant="longformer", seq_len=96, heads=2, head_dim=16, causal=True,
                               params={"window": 8, "global_tokens": 2}))
    for result in (performer, finer, longformer):
        fidelity = result.accuracy.fidelity
        assert fidelity["rows"] == 96 and fidelity["top_k"] == 32 and fidelity["negative_rows"] == 0
        assert 0 < fidelity["approx_kl"] < 30
        assert 0 < fidelity["approx_entropy_ratio"] < 1.5
        assert 0 < fidelity["approx_topk_mass"] <= 1
        assert not any("fidelity" in w for w in result.warnings)
    # FAVOR+ at logits of order one: every key keeps weight, KL of order 1e-2, closer with more features
    assert performer.accuracy.fidelity["dropped_mass"] == 0.0
    assert finer.accuracy.fidelity["approx_kl"] < performer.accuracy.fidelity["approx_kl"] < 0.1
    # the band sees 9 of up to 96 keys, plus 2 global ones: more peaked than softmax, keys dropped outright,
    # and the KL is mostly the floor's price for them
    band = longformer.accuracy.fidelity
    assert band["approx_entropy_ratio"] < 1 and 0.1 < band["dropped_mass"] < 1
    assert band["approx_topk_mass"] < performer.accuracy.fidelity["approx_topk_mass"]
    assert band["approx_kl"] > 0.5 * band["dropped_mass"] * -math.log(KL_FLOOR)


def test_sampled_rows_at_large_size_are_the_fidelity_rows():
    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False,
                               accuracy_max_pairs=64 * 64, accuracy_rows=24)
    result = measured(Case(variant="longformer", seq_len=128, heads=2, head_dim=8,
                           params={"window": 16, "global_tokens": 0}), settings=settings)
    assert result.accuracy.rows_checked == 24 and result.accuracy.fidelity["rows"] == 24


def test_exact_variants_and_longformer_under_its_own_window_have_no_fidelity():
    naive = measured(Case(variant="naive", seq_len=64, heads=2, head_dim=16))
    assert naive.accuracy.fidelity is None
    for causal in (False, True):
        case = Case(variant="longformer", seq_len=64, heads=2, head_dim=16, causal=causal, mask="sliding_window:8",
                    params={"window": 8, "global_tokens": 0})
        assert REGISTRY.get("longformer").approximation(case) is None
        window = measured(case)
        assert window.accuracy.approx is None and window.accuracy.fidelity is None


def test_a_failing_fidelity_is_a_warning_not_a_failed_cell():
    class Broken(Performer):
        def attention_weights(self, case, inputs, rows=None):
            raise RuntimeError("no weights today")

    result = measured(Case(variant="performer", seq_len=32, heads=2, head_dim=8, qk_std=0.5,
                           params={"features": 16}), variant=Broken())
    assert result.accuracy.approx is not None and result.accuracy.fidelity is None
    assert any("weight fidelity not computed: RuntimeError: no weights today" in w for w in result.warnings)


# --- storage -------------------------------------------------------------------------------------


def test_fidelity_round_trips_and_fills_the_tidy_columns(results_dir):
    case = Case(variant="longformer", seq_len=64, heads=2, head_dim=8, params={"window": 4, "global_tokens": 0})
    result = measured(case)
    naive_case = Case(variant="naive", seq_len=64, heads=2, head_dim=8)
    naive = measured(naive_case)
    assert Result.from_dict(result.to_dict()) == result
    old = result.to_dict()
    del old["accuracy"]["fidelity"]                                      # a cell stored before fidelity existed
    assert Result.from_dict(old).accuracy.fidelity is None

    writer = RunWriter.create(results_dir, Run(run_id="fid", name="fid", suite_name="s", suite_text="[suite]\n",
                                               started_at=now_iso()))
    writer.append(Cell(case_id=case.id, case=case.to_dict(), result=result, meta={"family": "longformer"}))
    writer.append(Cell(case_id=naive_case.id, case=naive_case.to_dict(), result=naive, meta={"family": "naive"}))
    writer.close("finished")
    loaded = load_run(writer.path)
    frame = tidy_frame([loaded])
    assert set(FIDELITY_COLUMNS) <= set(TIDY_COLUMNS)
    position = TIDY_COLUMNS.index("approx_rel_l2_error")
    assert TIDY_COLUMNS[position + 1: position + 4] == FIDELITY_COLUMNS
    first, second = frame.iloc[0], frame.iloc[1]
    for column in FIDELITY_COLUMNS:
        assert first[column] == pytest.approx(result.accuracy.fidelity[column])
        assert second[column] is None or math.isnan(second[column])

"""The drawn kinds of the `inputs` axis: each has the property its paper gives it, seeded and shaped like any case."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.core.case import Case
from attnbench.kinds.inputs import INPUTS
from attnbench.measure.distributions import (
    DESCRIPTIONS,
    SINK_MARGIN,
    draw_qkv,
    exact_weights,
    row_entropy_summary,
    sample_rows,
    sink_mass,
    window_mass,
)
from attnbench.measure.inputs import make_inputs

DRAWN = ("iid", "outliers", "clustered", "local", "sinks")
WINDOW = 256


def case_of(inputs: str, **fields) -> Case:
    fields.setdefault("seq_len", 64)
    return Case(variant="naive", inputs=inputs, **fields)


def weights_of(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, R, M) exact softmax weights of 64 seeded rows, and those rows."""
    q, k, _ = draw_qkv(case)
    rows = sample_rows(case, 64)
    return exact_weights(case, q, k, rows), rows


@pytest.mark.parametrize("fields", [{}, {"heads": 8, "kv_heads": 2, "head_dim": 16, "v_head_dim": 24,
                                         "kv_len": 96, "qk_std": 0.5, "seed": 3}], ids=["square", "gqa-dv-kv"])
def test_iid_is_what_make_inputs_drew(fields):
    case = case_of("iid", **fields)
    q, k, v = draw_qkv(case)
    inputs = make_inputs(case)
    assert torch.equal(q, inputs.q) and torch.equal(k, inputs.k) and torch.equal(v, inputs.v)
    generator = torch.Generator().manual_seed(case.seed)                    # the draw written out: q, k, v in order
    assert torch.equal(q, torch.randn(q.shape, generator=generator) * case.qk_std)
    assert torch.equal(k, torch.randn(k.shape, generator=generator) * case.qk_std)
    assert torch.equal(v, torch.randn(v.shape, generator=generator))


@pytest.mark.parametrize("kind", DRAWN)
def test_same_seed_same_tensors_other_seed_other_tensors(kind):
    first, again = draw_qkv(case_of(kind, seed=5)), draw_qkv(case_of(kind, seed=5))
    other = draw_qkv(case_of(kind, seed=6))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("kind", DRAWN)
@pytest.mark.parametrize("seq_len,kv_len", [(48, 80), (80, 48)], ids=["cross", "more-queries"])
def test_shapes_with_grouped_heads_and_unequal_dims(kind, seq_len, kv_len):
    case = case_of(kind, batch=2, heads=8, kv_heads=2, head_dim=16, v_head_dim=24, seq_len=seq_len, kv_len=kv_len)
    q, k, v = draw_qkv(case)
    assert q.shape == (2, 8, seq_len, 16) and k.shape == (2, 2, kv_len, 16) and v.shape == (2, 2, kv_len, 24)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" and bool(t.isfinite().all()) for t in (q, k, v))


def test_file_inputs_are_not_drawn():
    with pytest.raises(ValueError, match="file"):
        draw_qkv(case_of("file:layer0.safetensors"))


def test_every_kind_has_a_description_naming_its_source():
    assert set(DESCRIPTIONS) == set(INPUTS.names())
    for kind, source in [("outliers", "FlashAttention-3"), ("clustered", "Scatterbrain"), ("local", "RoPE"),
                         ("sinks", "StreamingLLM")]:
        assert source in DESCRIPTIONS[kind]


def tail_probability(threshold: float, std: float) -> float:
    """P(|X| > threshold) for X ~ N(0, std²)."""
    return math.erfc(threshold / (std * math.sqrt(2)))


@pytest.mark.parametrize("rate,qk_std", [(0.01, 0.5), (0.001, 1.0)])
def test_outliers_beyond_six_sigma_come_at_the_mixture_rate(rate, qk_std):
    """|x| > 6·qk_std: (1 - RATE)·P(|N(0,1)| > 6) + RATE·P(|N(0, 101)| > 6), within 5 binomial sigmas."""
    case = case_of(f"outliers:{rate}", heads=16, seq_len=4096, head_dim=64, qk_std=qk_std)
    q, k, v = draw_qkv(case)
    expected_rate = (1 - rate) * tail_probability(6, 1) + rate * tail_probability(6, math.sqrt(1 + 100))
    for x, scale in [(q, qk_std), (k, qk_std), (v, 1.0)]:
        trials = x.numel()
        expected = trials * expected_rate
        tolerance = 5 * math.sqrt(trials * expected_rate * (1 - expected_rate))
        assert abs(int((x.abs() > 6 * scale).sum()) - expected) < tolerance


def connected_components(adjacent: torch.Tensor) -> torch.Tensor:
    """(T,) label of each node's component (its smallest member) in the graph of the (T, T) bool matrix."""
    labels = torch.arange(adjacent.shape[0])
    while True:
        spread = torch.where(adjacent, labels[None, :], adjacent.shape[0]).min(-1).values
        updated = torch.minimum(labels, spread)
        if torch.equal(updated, labels):
            return labels
        labels = updated


@pytest.mark.parametrize("clusters", [3, 8])
def test_clustered_tokens_fall_into_c_clusters_shared_by_queries_and_keys(clusters):
    """Cosine > 0.5 links the tokens of one centre (≈ 1/(1 + 0.5²) = 0.8) and not of two (≈ 0 ± 0.15)."""
    case = case_of(f"clustered:{clusters}", heads=4, kv_heads=2, seq_len=192, kv_len=256, head_dim=64)
    q, k, _ = draw_qkv(case)
    for group in range(case.kv_heads):
        queries = q[0, 2 * group:2 * group + 2].reshape(-1, case.head_dim)              # (2N, d) the group's queries
        tokens = torch.cat([k[0, group], queries])                                       # (M + 2N, d)
        unit = tokens / tokens.norm(dim=-1, keepdim=True)
        labels = connected_components(unit @ unit.T > 0.5)
        names = labels.unique()
        assert names.numel() == clusters
        for name in names:                                      # every cluster has keys and queries
            members = labels == name
            assert members[:case.kv_len].any() and members[case.kv_len:].any()
        centres = torch.stack([tokens[labels == name].mean(0) for name in names])      # (C, d)
        within = torch.stack([(tokens[labels == name] - centre).pow(2).sum(-1).mean()
                              for name, centre in zip(names, centres, strict=True)]).mean()
        between = (centres - centres.mean(0)).pow(2).sum(-1).mean()
        assert within < 0.5 * between                           # SPREAD² = 0.25 of a centre's scale


@pytest.mark.parametrize("qk_std,causal", [(0.5, False), (1.0, False), (1.0, True)])
def test_local_puts_most_mass_within_256_keys(qk_std, causal):
    fields = {"heads": 4, "seq_len": 2048, "qk_std": qk_std, "causal": causal}
    local, rows = weights_of(case_of("local", **fields))
    iid, _ = weights_of(case_of("iid", **fields))
    local_mass = window_mass(local, case_of("local", **fields), rows, WINDOW).mean()
    iid_mass = window_mass(iid, case_of("iid", **fields), rows, WINDOW).mean()
    assert local_mass > 0.9
    assert iid_mass < 0.45 and local_mass > 2 * iid_mass


@pytest.mark.parametrize("sinks,qk_std,causal", [(4, 0.5, False), (4, 1.0, True), (1, 1.0, False)])
def test_sinks_hold_most_of_every_row(sinks, qk_std, causal):
    fields = {"heads": 4, "seq_len": 2048, "qk_std": qk_std, "causal": causal}
    case = case_of(f"sinks:{sinks}", **fields)
    weights, rows = weights_of(case)
    iid, _ = weights_of(case_of("iid", **fields))
    mass = sink_mass(weights, sinks)                                                    # (B, H, R)
    assert mass.mean() > 0.75 and mass.flatten().quantile(0.1) > 0.5     # measured: 0.78 and 0.57 at S=1, qk_std=1
    assert sink_mass(iid, sinks).mean() < 0.02


def test_sink_logits_sit_log_m_over_s_plus_margin_above_the_rest():
    case = case_of("sinks:4", heads=4, seq_len=1024, qk_std=0.5)
    q, k, _ = draw_qkv(case)
    logits = q @ k.transpose(-2, -1) / math.sqrt(case.head_dim)                        # (B, H, N, M)
    gap = logits[..., :4].mean() - logits[..., 4:].mean()
    assert float(gap) == pytest.approx(math.log(1024 / 4) + SINK_MARGIN, abs=0.1)


def test_entropy_orders_the_kinds_from_sinks_to_iid():
    """At qk_std 0.5 iid rows are nearly uniform (log M); clustered, local and sinks are ever more peaked."""
    entropy = {kind: row_entropy_summary(case_of(kind, heads=4, seq_len=1024, qk_std=0.5)) for kind in DRAWN}
    log_m = math.log(1024)
    assert all(summary.log_kv_len == log_m and summary.uniform == pytest.approx(log_m) for summary in entropy.values())
    assert log_m - 0.1 < entropy["iid"].mean <= log_m
    assert entropy["sinks"].mean < entropy["local"].mean < entropy["clustered"].mean < entropy["iid"].mean
    assert entropy["sinks"].mean < log_m / 2 and entropy["local"].mean < log_m - 2
    assert all(s.q10 <= s.median <= s.q90 and s.rows == 64 for s in entropy.values())


def test_causal_entropy_is_bounded_by_the_visible_keys():
    summary = row_entropy_summary(case_of("iid", heads=2, seq_len=512, causal=True, qk_std=0.5))
    rows = sample_rows(case_of("iid", seq_len=512), 64)
    assert summary.uniform == pytest.approx(float(torch.log(rows.double() + 1).mean()))
    assert summary.mean <= summary.uniform < summary.log_kv_len

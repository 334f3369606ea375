"""Grouped and multi-query heads (kv_heads), unequal value head dims (v_head_dim), end-aligned decode."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from attnbench.attention.flops import attention_flops
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs
from attnbench.plan.suite import expand, parse_suite
from attnbench.store.frame import TIDY_COLUMNS

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)


def per_head_reference(q, k, v, causal: bool):
    """Independent of `softmax_attention`: a loop over query heads, each with its own key/value head."""
    heads, kv_heads = q.shape[1], k.shape[1]
    n, m = q.shape[2], k.shape[2]
    out = []
    for h in range(heads):
        kh, vh = k[:, h * kv_heads // heads], v[:, h * kv_heads // heads]        # (B, M, d), (B, M, d_v)
        scores = q[:, h] @ kh.transpose(-2, -1) / math.sqrt(q.shape[-1])        # (B, N, M)
        if causal:
            i = torch.arange(n).unsqueeze(1)
            j = torch.arange(m).unsqueeze(0)
            scores = scores.masked_fill(j > i + (m - n), float("-inf"))          # end-aligned
        out.append(torch.softmax(scores, -1) @ vh)                               # (B, N, d_v)
    return torch.stack(out, dim=1)


def test_case_axes_default_to_heads_and_head_dim_and_keep_ids():
    case = Case(variant="naive", seq_len=128)
    assert (case.kv_heads, case.v_head_dim) == (8, 64)
    assert Case(variant="naive", seq_len=128, kv_heads=8, v_head_dim=64).id == case.id
    grouped = Case(variant="naive", seq_len=128, kv_heads=2, v_head_dim=32)
    assert grouped.id != case.id and grouped.grouped and not case.grouped
    assert "H8Hkv2N128d64dv32" in grouped.label
    with pytest.raises(ValueError, match="kv_heads must divide heads"):
        Case(variant="naive", seq_len=128, heads=8, kv_heads=3)
    inputs = make_inputs(grouped)
    assert inputs.q.shape == (1, 8, 128, 64) and inputs.k.shape == (1, 2, 128, 64) and inputs.v.shape == (1, 2, 128, 32)
    assert grouped.input_bytes == (8 * 128 * 64 + 2 * 128 * 64 + 2 * 128 * 32) * 4


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_reference_matches_a_per_head_loop(causal):
    case = Case(variant="naive", seq_len=5, kv_len=9, heads=6, kv_heads=2, head_dim=8, v_head_dim=4, dtype="float64")
    q, k, v = make_inputs(case).tensors()
    assert torch.allclose(softmax_attention(q, k, v, causal=causal), per_head_reference(q, k, v, causal), atol=1e-12)


CASES = [
    dict(heads=8, kv_heads=2, seq_len=96),                          # GQA
    dict(heads=8, kv_heads=1, seq_len=96),                          # MQA
    dict(heads=4, kv_heads=4, seq_len=1, kv_len=256, causal=True),  # decode, one query
    dict(heads=8, kv_heads=2, seq_len=4, kv_len=256, causal=True),  # decode, 4 queries, GQA
    dict(heads=8, kv_heads=2, seq_len=64, causal=True, mode="fwd_bwd"),
]


@pytest.mark.parametrize("variant", ["naive", "sdpa-math", "sdpa-flash"])
@pytest.mark.parametrize("fields", CASES, ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_exact_variants_run_grouped_heads_and_decode_within_tolerance(variant, fields):
    case = Case(variant=variant, head_dim=32, **fields)
    result = measure_case(case, default_registry().get(variant), FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    pairs = sum(min(case.kv_len, i + 1 + case.kv_len - case.seq_len) for i in range(case.seq_len)) \
        if case.causal else case.seq_len * case.kv_len
    forward = 2 * case.batch * case.heads * pairs * (case.head_dim + case.v_head_dim)
    assert attention_flops(case) == forward
    assert result.flops == (round(forward * 3.5) if case.mode == "fwd_bwd" else forward)


def test_sdpa_flash_decode_is_aligned_at_the_end_not_the_top_left():
    """One query against 64 causal keys sees every key; SDPA's is_causal would let it see key 0 only."""
    registry = default_registry()
    case = Case(variant="sdpa-flash", seq_len=1, kv_len=64, heads=2, head_dim=16, causal=True)
    inputs = make_inputs(case)
    out = registry.get("sdpa-flash").prepare(case, inputs)()
    q, k, v = (t.double() for t in inputs.tensors())
    sees_all = softmax_attention(q, k, v, causal=False)
    key_zero_only = v[:, :, :1, :]
    assert torch.allclose(out.double(), sees_all, atol=1e-5)
    assert not torch.allclose(out.double(), key_zero_only, atol=1e-2)


@pytest.mark.parametrize("variant", ["naive", "sdpa-math"])
def test_unequal_value_head_dim_like_mla(variant):
    case = Case(variant=variant, seq_len=64, heads=4, kv_heads=4, head_dim=48, v_head_dim=32, causal=True)
    result = measure_case(case, default_registry().get(variant), FAST)
    assert result.status == "ok" and result.accuracy.ok is True, (result.reason, result.accuracy)
    assert result.flops == 2 * 4 * (64 * 65 // 2) * (48 + 32)


def test_variants_without_support_say_why():
    registry = default_registry()
    grouped = Case(variant="luong-dot", seq_len=64, kv_heads=2)
    assert any("kv_heads == heads" in r for r in registry.get("luong-dot").unsupported_reasons(grouped))
    unequal = Case(variant="sdpa-flash", seq_len=64, v_head_dim=32)
    assert any("one head dim" in r for r in registry.get("sdpa-flash").unsupported_reasons(unequal))
    for name in ("performer", "longformer", "mamba2-ssd"):
        assert registry.get(name).unsupported_reasons(Case(variant=name, seq_len=64, kv_heads=1))


def test_suites_sweep_kv_heads_and_v_head_dim_and_the_tidy_table_has_them():
    suite = parse_suite('[suite]\nname = "g"\nvariants = ["naive"]\n[defaults]\nheads = 8\nhead_dim = 32\n'
                        '[sweep]\nseq_len = [64]\nkv_heads = [8, 2, 1]\nv_head_dim = [32, 16]\n', "g.toml")
    cases = expand(suite, default_registry())
    assert sorted((c.kv_heads, c.v_head_dim) for c in cases) == [(1, 16), (1, 32), (2, 16), (2, 32), (8, 16), (8, 32)]
    assert {"kv_heads", "v_head_dim"} <= set(TIDY_COLUMNS)


@pytest.mark.parametrize("knobs", [{}, {"block": 16, "query_block": 24}], ids=["default-blocks", "small-blocks"])
@pytest.mark.parametrize("fields", CASES + [dict(heads=8, kv_heads=1, seq_len=1, kv_len=256, causal=True),
                                            dict(heads=8, kv_heads=2, seq_len=48, v_head_dim=24, causal=True,
                                                 mode="fwd_bwd")],
                         ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_flash_tiled_runs_grouped_heads_and_decode_within_tolerance(fields, knobs):
    """flash-tiled takes grouped heads without repeating k and v, end-aligned decode and v_head_dim."""
    variant = default_registry().get("flash-tiled")
    case = Case(variant="flash-tiled", head_dim=32, params={**variant.params, **knobs}, **fields)
    result = measure_case(case, variant, FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    forward = attention_flops(case)
    assert result.flops == (round(forward * 3.5) if case.mode == "fwd_bwd" else forward)


def test_flash_tiled_grouped_heads_match_a_per_head_loop():
    """Against the loop above, not the shared reference: query head h reads key/value head h // (H // Hkv)."""
    variant = default_registry().get("flash-tiled")
    for seq_len, kv_len in ((5, 9), (1, 40), (12, 7)):
        case = Case(variant="flash-tiled", seq_len=seq_len, kv_len=kv_len, heads=6, kv_heads=2, head_dim=8,
                    v_head_dim=4, causal=True, dtype="float64", params={"block": 3, "query_block": 2})
        q, k, v = make_inputs(case).tensors()
        out = variant.prepare(case, make_inputs(case))()
        expected = torch.nan_to_num(per_head_reference(q, k, v, causal=True), nan=0.0)   # no key seen: 0
        assert torch.allclose(out, expected, atol=1e-12)


# Queries that see no key: end-aligned causal with kv_len < seq_len puts the first seq_len - kv_len queries
# before every key; a window W leaves a query further than W from every key without one.
NO_KEY = [
    (dict(seq_len=33, kv_len=16, causal=True), 17),                                 # position i - 17 < 0
    (dict(seq_len=40, kv_len=16, mask="sliding_window:4"), 20),                     # i - 24 < -4
    (dict(seq_len=40, kv_len=16, mask="sliding_window:4", causal=True), 24),        # i - 24 < 0
]


@pytest.mark.parametrize("variant", ["naive", "sdpa-math", "flash-tiled"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("fields,blind", NO_KEY, ids=["causal-decode", "window", "causal-window"])
def test_a_query_that_sees_no_key_attends_to_nothing(variant, mode, fields, blind):
    """Its output row is 0, as in the float64 reference, SDPA, flash-tiled and flex, not NaN; gradients stay finite."""
    registry = default_registry()
    case = Case(variant=variant, batch=2, heads=8, kv_heads=2, head_dim=16, mode=mode, **fields)
    result = measure_case(case, registry.get(variant), FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.output.nonfinite == 0 and result.accuracy.ok is True, result.accuracy
    assert all(g.nonfinite == 0 for g in result.accuracy.gradients.values()), result.accuracy.gradients
    out = registry.get(variant).prepare(case, make_inputs(case))()                   # (B, H, N, d_v)
    assert bool(torch.isfinite(out).all())
    assert float(out[:, :, :blind].abs().max()) == 0.0
    assert float(out[:, :, blind:].abs().min(dim=-1).values.min()) > 0.0           # every other row sees a key


def readme_axes_table() -> dict[str, tuple[bool, bool, set[str], set[str]]]:
    """README's table of which variant takes which axis: variant -> (grouped heads, v_head_dim, masks, score mods)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    header = "| variant | grouped heads (kv_heads < heads) | v_head_dim ≠ head_dim | masks | score mods |"
    assert header in text, "README has no table of the axes each variant takes"
    rows = text.split(header, 1)[1].splitlines()[2:]
    table = {}
    for row in rows:
        if not row.startswith("|"):
            break
        names, gqa, dv, masks, mods = (cell.strip() for cell in row.strip("|").split("|"))
        kinds = [set() if cell == "none" else {kind.strip() for kind in cell.split(",")} for cell in (masks, mods)]
        for name in re.findall(r"`([^`]+)`", names) or ["every other variant"]:
            table[name] = (gqa == "yes", dv == "yes", *kinds)
    return table


def test_the_readme_says_which_variants_take_grouped_heads_value_dims_masks_and_score_mods():
    registry = default_registry()
    table = readme_axes_table()
    others = table.pop("every other variant")
    for name in registry.names():
        variant = registry.get(name)
        declared = (variant.supports_gqa, variant.supports_v_head_dim, set(variant.supported_masks),
                    set(variant.supported_score_mods))
        assert table.get(name, others) == declared, name
    assert not set(table) - set(registry.names()), "the README names a variant that is not registered"
    assert {"flash-tiled", "flex"} <= {n for n, row in table.items() if row[0] and row[1]}

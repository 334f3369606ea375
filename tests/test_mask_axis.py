"""The `mask` axis: sliding_window, document and prefix_lm, one predicate for references, kernels and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_suites import check_kind_axis

from attnbench.attention.flops import attention_flops
from attnbench.attention.masks import case_mask_matrix, case_visible_pairs, document_ids
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.kinds.masks import MASKS as MASK_KINDS
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)
MASKS = ["sliding_window:8", "document:3", "prefix_lm:10"]


def by_definition(case: Case) -> torch.Tensor:
    """(N, M) bool written out from each mask's definition, one (query, key) pair at a time."""
    n, m = case.seq_len, case.kv_len
    spec = MASK_KINDS.parse(case.mask)
    docs = document_ids(n, spec.arg, case.seed).tolist() if spec.name == "document" else None
    allowed = torch.zeros(n, m, dtype=torch.bool)
    for i in range(n):
        position = i + m - n
        for j in range(m):
            if spec.name == "sliding_window":
                ok = abs(position - j) <= spec.arg and (j <= position or not case.causal)
            elif spec.name == "document":
                ok = docs[i] == docs[j] and (j <= i or not case.causal)
            elif spec.name == "prefix_lm":
                ok = j < spec.arg or j <= position
            else:
                ok = j <= position or not case.causal
            allowed[i, j] = ok
    return allowed


def test_parse_and_case_validation():
    assert MASK_KINDS.parse("Sliding_Window:256").text == "sliding_window:256"
    with pytest.raises(ValueError, match="unknown mask"):
        Case(variant="naive", seq_len=64, mask="diagonal")
    with pytest.raises(ValueError, match="kv_len == seq_len"):
        Case(variant="naive", seq_len=64, kv_len=128, mask="document:2")
    case = Case(variant="naive", seq_len=64, mask="document:4", causal=True)
    assert case.label.endswith("-doc4") and case.id != Case(variant="naive", seq_len=64, causal=True).id
    assert Case(variant="naive", seq_len=64, mask="none").id == Case(variant="naive", seq_len=64).id


def test_documents_are_seeded_and_cover_the_sequence():
    ids = document_ids(100, 5, seed=3)
    assert ids.tolist() == document_ids(100, 5, seed=3).tolist()
    assert ids[0] == 0 and ids[-1] == 4 and bool((ids[1:] - ids[:-1] >= 0).all())
    assert sorted(set(ids.tolist())) == [0, 1, 2, 3, 4]
    assert document_ids(100, 5, seed=4).tolist() != ids.tolist()


@pytest.mark.parametrize("mask, shape", [(mask, shape) for mask in MASKS + ["none"] for shape in ((24, 24), (6, 30))
                                         if shape[0] == shape[1] or not mask.startswith("document")])
@pytest.mark.parametrize("causal", [False, True])
def test_matrix_and_pair_count_match_the_definition(mask, causal, shape):
    n, m = shape
    case = Case(variant="naive", seq_len=n, kv_len=m, causal=causal, mask=mask)
    expected = by_definition(case)
    matrix = case_mask_matrix(case)
    got = torch.ones(n, m, dtype=torch.bool) if matrix is None else matrix
    assert torch.equal(got, expected)
    assert case_visible_pairs(case) == int(expected.sum())
    assert attention_flops(case) == 2 * 8 * int(expected.sum()) * (64 + 64)


def test_a_document_mask_worked_by_hand():
    # seq_len 10, 3 documents: the seeded lengths, their causal pairs L(L+1)/2 summed, times 4·B·H·d.
    case = Case(variant="naive", seq_len=10, mask="document:3", causal=True, heads=2, head_dim=16)
    lengths = torch.bincount(document_ids(10, 3, 0)).tolist()
    assert sum(lengths) == 10 and len(lengths) == 3
    pairs = sum(length * (length + 1) // 2 for length in lengths)
    assert case_visible_pairs(case) == pairs
    assert attention_flops(case) == 4 * 1 * 2 * pairs * 16


@pytest.mark.parametrize("variant", ["naive", "sdpa-math", "sdpa-flash"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("causal", [False, True])
def test_exact_variants_compute_the_masked_function(variant, mask, causal):
    case = Case(variant=variant, seq_len=48, heads=4, kv_heads=2, head_dim=16, causal=causal, mask=mask)
    result = measure_case(case, default_registry().get(variant), FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    assert result.flops == attention_flops(case)


def test_the_reference_applies_the_mask():
    case = Case(variant="naive", seq_len=12, heads=1, head_dim=8, mask="sliding_window:2", dtype="float64")
    q, k, v = make_inputs(case).tensors()
    allowed = by_definition(case)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
    expected = torch.softmax(scores, -1) @ v
    out = default_registry().get("naive").reference(case, make_inputs(case))
    assert torch.allclose(out, expected, atol=1e-12)
    assert not torch.allclose(out, softmax_attention(q, k, v, causal=False), atol=1e-3)


def test_variants_without_a_mask_say_why_and_suites_sweep_it():
    check_kind_axis("mask", ["none", "sliding_window:8", "document:2"],
                    refused=("flash-tiled", "prefix_lm:8", "has no prefix_lm mask"), unknown="window:8")


@pytest.mark.e2e
def test_flex_takes_every_mask_as_a_block_mask(flex):
    for mask in MASKS:
        case = Case(variant="flex", seq_len=128, heads=2, head_dim=32, causal=True, mask=mask)
        result = measure_case(case, flex, FAST)
        assert result.status == "ok" and result.accuracy.ok is True, (mask, result.reason, result.accuracy)

"""A mask kind is one object: registered in this process only, it is parsed, labelled and masks naive attention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from attnbench.attention.masks import case_visible_pairs
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.kinds.masks import MASKS, SizedMask
from attnbench.measure.inputs import make_inputs


@dataclass(frozen=True)
class Strided(SizedMask):
    """``strided:S``: a query sees every S-th key and the key at its own position."""

    def mask_mod(self, case, stride, device=None):
        offset = case.kv_len - case.seq_len

        def strided(b, h, q_idx, kv_idx):
            return (kv_idx % stride == 0) | (kv_idx == q_idx + offset)

        return strided

    def visible_pairs(self, case, stride):
        return int(self.mask_mod(case, stride)(None, None, torch.arange(case.seq_len)[:, None],
                                                torch.arange(case.kv_len)[None, :]).sum())


STRIDED = Strided("strided", "strided:S (every S-th key and the query's own)", short="st", example=4, minimum=1)


@pytest.fixture
def strided():
    MASKS.register(STRIDED)
    try:
        yield STRIDED
    finally:
        MASKS.unregister("strided")


def by_hand(case: Case, stride: int) -> torch.Tensor:
    """(N, M) bool written out one pair at a time."""
    allowed = torch.zeros(case.seq_len, case.kv_len, dtype=torch.bool)
    for i in range(case.seq_len):
        for j in range(case.kv_len):
            allowed[i, j] = j % stride == 0 or j == i + case.kv_len - case.seq_len
    return allowed


def test_a_registered_mask_kind_is_parsed_labelled_and_masks_naive_attention(strided):
    case = Case(variant="naive", seq_len=12, kv_len=12, heads=2, head_dim=8, mask="Strided:3")
    assert case.mask == "strided:3" and case.label.endswith("-st3")
    with pytest.raises(ValueError, match=r"mask 'strided:0': the size must be at least 1"):
        Case(variant="naive", seq_len=12, mask="strided:0")
    allowed = by_hand(case, 3)
    assert case_visible_pairs(case) == int(allowed.sum())

    inputs = make_inputs(case)
    q, k, v = inputs.tensors()
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(case.head_dim)
    expected = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    naive = default_registry().get("naive")
    torch.testing.assert_close(naive.prepare(case, inputs)(), expected)


def test_an_unregistered_kind_is_refused_naming_what_is_accepted():
    assert "strided" not in MASKS
    with pytest.raises(ValueError, match=r"unknown mask 'strided:3': expected none, sliding_window:W"):
        Case(variant="naive", seq_len=12, mask="strided:3")

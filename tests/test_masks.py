"""attnbench.attention.masks against the definition, written as a plain Python loop.

Query i sits at key position i + kv_len - seq_len (end alignment): a decode
step (kv_len > seq_len) sees the whole cache before it, and with
kv_len < seq_len the first queries see no key at all.
"""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.attention.flops import causal_visible_pairs
from attnbench.attention.masks import (
    band_mask,
    band_mask_mod,
    causal_mask,
    causal_mask_mod,
    mask_matrix,
    query_positions,
    visible_pairs,
)

# (seq_len, kv_len): square, decode (kv_len > seq_len, one query or a few), and kv_len < seq_len.
SHAPES = [(1, 1), (6, 6), (1, 7), (3, 10), (10, 3), (7, 1), (12, 12)]
WINDOWS = [0, 1, 2, 5, 40]


def by_loop(seq_len: int, kv_len: int, causal: bool, window: int | None) -> torch.Tensor:
    allowed = torch.zeros(seq_len, kv_len, dtype=torch.bool)
    for i in range(seq_len):
        position = i + kv_len - seq_len
        for j in range(kv_len):
            visible = True
            if causal and j > position:
                visible = False
            if window is not None and abs(position - j) > window:
                visible = False
            allowed[i, j] = visible
    return allowed


def shape_id(shape):
    return f"N{shape[0]}-M{shape[1]}"


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_causal_mask_is_the_loop(shape):
    seq_len, kv_len = shape
    expected = by_loop(seq_len, kv_len, causal=True, window=None)
    assert torch.equal(causal_mask(seq_len, kv_len), expected)
    assert causal_mask(seq_len, kv_len).dtype == torch.bool
    assert visible_pairs(seq_len, kv_len, causal=True) == int(expected.sum()) == causal_visible_pairs(seq_len, kv_len)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_band_mask_is_the_loop(shape, window, causal):
    seq_len, kv_len = shape
    expected = by_loop(seq_len, kv_len, causal=causal, window=window)
    assert torch.equal(band_mask(seq_len, kv_len, window, causal=causal), expected)
    assert visible_pairs(seq_len, kv_len, causal=causal, window=window) == int(expected.sum())


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_rows_select_the_same_rows(shape):
    seq_len, kv_len = shape
    rows = torch.tensor(sorted({0, seq_len // 2, seq_len - 1}))
    assert torch.equal(causal_mask(seq_len, kv_len, rows=rows), causal_mask(seq_len, kv_len)[rows])
    assert torch.equal(band_mask(seq_len, kv_len, 2, causal=True, rows=rows),
                       band_mask(seq_len, kv_len, 2, causal=True)[rows])
    assert query_positions(seq_len, kv_len, rows).tolist() == [int(r) + kv_len - seq_len for r in rows]


def test_a_single_decode_query_sees_the_whole_cache():
    assert causal_mask(1, 9).all()
    assert band_mask(1, 9, 3, causal=True).tolist() == [[False] * 5 + [True] * 4]


def test_without_a_mask_every_pair_is_visible():
    assert visible_pairs(5, 8) == 40


@pytest.mark.parametrize("shape", [(6, 6), (3, 10), (10, 3)], ids=shape_id)
def test_mask_mods_take_flex_index_tensors(shape):
    """The mask_mod form is what Flex calls: scalar index tensors in, a bool tensor out, and a 0-d tensor window."""
    seq_len, kv_len = shape
    causal = causal_mask_mod(seq_len, kv_len)
    band = band_mask_mod(seq_len, kv_len, torch.tensor(2), causal=True)
    expected_causal = by_loop(seq_len, kv_len, causal=True, window=None)
    expected_band = by_loop(seq_len, kv_len, causal=True, window=2)
    for i in range(seq_len):
        for j in range(kv_len):
            q_idx, kv_idx = torch.tensor(i), torch.tensor(j)
            assert bool(causal(torch.tensor(0), torch.tensor(0), q_idx, kv_idx)) == bool(expected_causal[i, j])
            assert bool(band(torch.tensor(0), torch.tensor(0), q_idx, kv_idx)) == bool(expected_band[i, j])
    assert torch.equal(mask_matrix(band, seq_len, kv_len), expected_band)


def test_large_counts_need_no_matrix():
    """visible_pairs is closed form: a 1M × 1M causal mask is counted without building it."""
    n = 1 << 20
    assert visible_pairs(n, n, causal=True) == n * (n + 1) // 2
    assert visible_pairs(n, n, window=3) == n * 7 - 3 * 4


def test_the_mask_names_are_public():
    for name in ("causal_mask", "band_mask", "causal_mask_mod", "band_mask_mod", "mask_matrix",
                 "query_positions", "visible_pairs"):
        assert getattr(attnbench, name) is getattr(attnbench.attention.masks, name)

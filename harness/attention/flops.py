"""FLOP counts of the attention functions (a multiply-add counts 2).

The convention (TritonBench's): a cell's `flops` is the useful forward FLOPs
of the *function* it computes, the same number for every variant of that
function; what one implementation really executes (masked-out products,
padding) is its `performed_flops`. Only the q kᵀ and P v products count;
softmax's elementwise work counts in neither.
"""

from __future__ import annotations

from attnbench.attention.masks import case_visible_pairs, visible_pairs
from attnbench.kinds.lengths.batch import is_ragged, ragged_batch


def attention_flops(case, *, pairs: int | None = None, batch_pairs: int | None = None) -> int:
    """FLOPs of q kᵀ and P v over `pairs` (query, key) pairs: 2·B·H·pairs·d_qk + 2·B·H·pairs·d_v.

    `pairs` defaults to the pairs the case's mask lets through (N·M, the
    causal pairs, or those of its `mask` axis: `case_visible_pairs`), which makes this softmax attention's
    useful count: 2·B·H·pairs·(d + d_v), with H the query heads (GQA shares
    k and v between heads, not the products). Pass ``pairs=seq_len * kv_len`` for an
    implementation that computes every product and masks afterwards, or a
    sparse pattern's own pair count. A ragged batch (`lengths`, `layout`)
    counts each sequence's own pairs (`RaggedBatch.useful_pairs`); pass
    `batch_pairs` (pairs summed over the batch) for what a layout executes.
    """
    qk_dim, value_dim = case.head_dim, case.v_head_dim
    if batch_pairs is None and pairs is None and is_ragged(case):
        batch_pairs = ragged_batch(case).useful_pairs()
    if batch_pairs is not None:                                # summed over the batch: a ragged batch's pairs
        return 2 * case.heads * batch_pairs * (qk_dim + value_dim)
    if pairs is None:
        pairs = case_visible_pairs(case)
    rows = case.batch * case.heads
    return 2 * rows * pairs * qk_dim + 2 * rows * pairs * value_dim


def causal_visible_pairs(seq_len: int, kv_len: int) -> int:
    """Number of (query, key) pairs a causal mask aligned at the end lets through."""
    return visible_pairs(seq_len, kv_len, causal=True)

"""FLOP counts of the attention functions (a multiply-add counts 2)."""

from __future__ import annotations

from harness.attention.masks import visible_pairs


def attention_flops(case, *, causal_fraction: bool = True) -> int:
    """FLOPs of q kᵀ and P v for a dense case: 4·B·H·N·M·d, halved (about) under a causal mask."""
    total = 4 * case.batch * case.heads * case.seq_len * case.kv_len * case.head_dim
    if case.causal and causal_fraction:
        visible = causal_visible_pairs(case.seq_len, case.kv_len)
        total = total * visible // (case.seq_len * case.kv_len)
    return total


def causal_visible_pairs(seq_len: int, kv_len: int) -> int:
    """Number of (query, key) pairs a causal mask aligned at the end lets through."""
    return visible_pairs(seq_len, kv_len, causal=True)

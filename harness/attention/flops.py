"""FLOP counts of the attention functions (a multiply-add counts 2)."""

from __future__ import annotations


def attention_flops(case, *, causal_fraction: bool = True) -> int:
    """FLOPs of q kᵀ and P v for a dense case: 4·B·H·N·M·d, halved (about) under a causal mask."""
    total = 4 * case.batch * case.heads * case.seq_len * case.kv_len * case.head_dim
    if case.causal and causal_fraction:
        visible = causal_visible_pairs(case.seq_len, case.kv_len)
        total = total * visible // (case.seq_len * case.kv_len)
    return total


def causal_visible_pairs(seq_len: int, kv_len: int) -> int:
    """Number of (query, key) pairs a causal mask aligned at the end lets through."""
    offset = kv_len - seq_len
    total = 0
    # query i sees min(kv_len, max(0, i + offset + 1)) keys; sum in closed form over the ramp.
    first_full = max(0, kv_len - offset - 1)
    ramp_end = min(seq_len, first_full)
    ramp_start = max(0, -offset - 1 + 1) if offset < 0 else 0
    for_ramp = range(ramp_start, ramp_end)
    if len(for_ramp):
        a, b = for_ramp.start + offset + 1, for_ramp.stop - 1 + offset + 1
        total += (a + b) * len(for_ramp) // 2
    total += max(0, seq_len - max(ramp_end, ramp_start)) * kv_len
    return total

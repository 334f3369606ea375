"""Paged KV caches (the `page_size` axis): the block table, the pool, the bytes a step moves, and every paged variant.

The references are independent of `attnbench.attention.paged`: a slot of the
pool is looked up one key at a time from the table's definition, bytes are
counted by hand, and every kernel's paged output is compared with the float64
reference computed on the contiguous k and v.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_suites import measure_accurate

from attnbench.attention.paged import (
    block_table,
    case_block_table,
    gather_pages,
    page_owner_and_position,
    paged_cache,
    to_pages,
)
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs
from attnbench.plan.suite import expand, parse_suite
from attnbench.variants import flash_attn_pkg

REGISTRY = default_registry()
FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False,
                       telemetry=False)
PAGED_CPU_VARIANTS = ["naive", "sdpa-math", "sdpa-flash", "flash-decoding"]
# (fields, id): page sizes that divide kv_len and that leave the last page part empty, in order and
# shuffled, one query and a few, GQA and MQA, a batch whose pages interleave in the pool.
SHAPES = [
    (dict(seq_len=1, kv_len=128, page_size=16), "decode-page16"),
    (dict(seq_len=1, kv_len=100, page_size=16, causal=True, batch=3), "ragged-last-page"),
    (dict(seq_len=4, kv_len=1000, page_size=7, causal=True, batch=2, page_shuffle=0.5), "page7-half-shuffled"),
    (dict(seq_len=3, kv_len=300, page_size=256, causal=True, batch=2, kv_heads=1), "page256-mqa"),
    (dict(seq_len=2, kv_len=96, page_size=32, causal=True, page_shuffle=0.0), "in-order"),
]


def paged_case(variant: str, dtype: str = "float64", head_dim: int = 8, **fields) -> Case:
    return Case(**{"variant": variant, "heads": 4, "kv_heads": 2, "head_dim": head_dim, "dtype": dtype,
                   "qk_std": 1.5, **fields})


# ------------------------------------------------------------------ the block table and the pool


def test_the_block_table_is_a_seeded_permutation_and_shuffle_sets_how_many_pages_move():
    in_order = block_table(batch=4, kv_len=160, page_size=16, shuffle=0.0, seed=0)   # 10 pages a sequence
    assert in_order.dtype == torch.int32 and in_order.shape == (4, 10)
    assert in_order.flatten().tolist() == list(range(40))
    for shuffle in (0.25, 1.0):
        table = block_table(4, 160, 16, shuffle, seed=3)
        assert sorted(table.flatten().tolist()) == list(range(40))                    # every page, once
        assert torch.equal(table, block_table(4, 160, 16, shuffle, seed=3))           # seeded
        moved = int((table.flatten() != torch.arange(40)).sum())
        assert moved <= round(shuffle * 40) and moved >= round(shuffle * 40) // 2, moved
    assert not torch.equal(block_table(4, 160, 16, 1.0, seed=3), block_table(4, 160, 16, 1.0, seed=4))
    assert block_table(2, 17, 16, 1.0, seed=0).shape == (2, 2)                        # ceil(17 / 16)


def test_the_pool_holds_each_key_where_the_table_says_and_gathers_back():
    generator = torch.Generator().manual_seed(1)
    k = torch.randn(3, 2, 45, 5, generator=generator)                                 # (B, Hkv, M, d)
    table = block_table(3, 45, 8, 1.0, seed=2)                                        # 6 pages a sequence
    pool = to_pages(k, table, page_size=8)
    assert pool.shape == (18, 8, 2, 5)
    for b in range(3):
        for j in range(48):
            slot = pool[int(table[b, j // 8]), j % 8]                                 # (Hkv, d)
            assert torch.equal(slot, k[b, :, j]) if j < 45 else not slot.any()        # empty slots are 0
    assert torch.equal(gather_pages(pool, table, 45), k)
    owner, start = page_owner_and_position(table, 8)
    for b in range(3):
        for p in range(6):
            physical = int(table[b, p])
            assert (int(owner[physical]), int(start[physical])) == (b, 8 * p)


def test_a_paged_case_moves_whole_pages_and_its_block_table():
    contiguous = Case(variant="naive", seq_len=1, kv_len=100, batch=3, heads=8, kv_heads=2, head_dim=16)
    paged = Case(**{**contiguous.to_dict(), "page_size": 16})
    q = out = 3 * 8 * 1 * 16 * 4
    keys_and_values = 3 * 2 * 100 * (16 + 16) * 4
    assert contiguous.bytes_moved == q + keys_and_values + out
    pages = 7                                                                         # ceil(100 / 16)
    empty_slots = 3 * (pages * 16 - 100) * 2 * (16 + 16) * 4
    assert paged.bytes_moved == q + keys_and_values + out + empty_slots + 3 * pages * 4
    exact = Case(**{**contiguous.to_dict(), "kv_len": 128, "page_size": 16})
    assert exact.bytes_moved == Case(**{**exact.to_dict(), "page_size": 0}).bytes_moved + 3 * 8 * 4


# ------------------------------------------------------------------ the axis


def test_the_page_axes_label_validate_and_keep_old_ids():
    plain = Case(variant="naive", seq_len=1, kv_len=64)
    assert Case(variant="naive", seq_len=1, kv_len=64, page_size=0).id == plain.id
    paged = Case(variant="naive", seq_len=1, kv_len=64, page_size=16)
    assert paged.label.endswith("-page16") and paged.id != plain.id
    assert Case(variant="naive", seq_len=1, kv_len=64, page_size=16, page_shuffle=0.5).label.endswith("-page16-shuffle0.5")
    assert Case(variant="naive", seq_len=1, kv_len=64, page_shuffle=0.5).id == plain.id   # no pages, no shuffle
    with pytest.raises(ValueError, match="page_size must be a non-negative integer"):
        Case(variant="naive", seq_len=1, page_size=-16)
    with pytest.raises(ValueError, match="page_shuffle must be a fraction from 0 to 1"):
        Case(variant="naive", seq_len=1, page_size=16, page_shuffle=2)


def test_variants_without_a_paged_cache_say_so_and_paged_cells_are_forward_only():
    case = Case(variant="flash-tiled", seq_len=1, kv_len=64, page_size=16)
    reasons = REGISTRY.get("flash-tiled").unsupported_reasons(case)
    assert any("has no paged KV cache (page_size > 0)" in r and "flash-decoding" in r for r in reasons), reasons
    backward = Case(variant="naive", seq_len=1, kv_len=64, page_size=16, mode="fwd_bwd")
    assert any("forward only" in r for r in REGISTRY.get("naive").unsupported_reasons(backward))
    for name in ("naive", "sdpa-math", "sdpa-flash", "flash-decoding", "flex", "flash-attn"):
        assert REGISTRY.get(name).supports_paged_kv, name


def test_a_suite_sweeps_page_size():
    suite = parse_suite('[suite]\nname = "s"\nvariants = ["naive"]\n[sweep]\nseq_len = [1]\nkv_len = [64]\n'
                        'page_size = [0, 16, 256]\n', "s.toml")
    assert sorted(c.page_size for c in expand(suite, REGISTRY)) == [0, 16, 256]


# ------------------------------------------------------------------ the kernels


@pytest.mark.parametrize("variant", PAGED_CPU_VARIANTS)
@pytest.mark.parametrize("fields", [s[0] for s in SHAPES], ids=[s[1] for s in SHAPES])
def test_paged_and_contiguous_decode_agree_with_the_float64_reference(variant, fields):
    case = paged_case(variant, **fields)
    implementation = REGISTRY.get(variant)
    assert not implementation.unsupported_reasons(case)
    inputs = make_inputs(case)
    q, k, v = inputs.tensors()
    reference = softmax_attention(q, k, v, causal=case.causal)                        # on the contiguous cache
    paged = implementation.prepare(case, inputs)()
    contiguous_case = Case(**{**case.to_dict(), "page_size": 0})
    contiguous = implementation.prepare(contiguous_case, make_inputs(contiguous_case))()
    torch.testing.assert_close(paged, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(contiguous, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["naive", "sdpa-math"])
def test_paged_cells_compose_with_masks_and_sinks(variant):
    case = paged_case(variant, seq_len=3, kv_len=90, page_size=16, causal=True, mask="sliding_window:20",
                      sinks="learned", batch=2)
    implementation = REGISTRY.get(variant)
    inputs = make_inputs(case)
    expected = implementation.reference(case, inputs)
    torch.testing.assert_close(implementation.prepare(case, inputs)(), expected, rtol=1e-12, atol=1e-12)


def test_a_paged_cell_is_measured_accurate_with_its_traffic():
    case = Case(variant="flash-decoding", seq_len=1, kv_len=1000, batch=2, heads=8, kv_heads=2, head_dim=32,
                causal=True, page_size=16)
    calibration = {"device": "cpu", "copy_bytes_per_s": 1e10, "matmul_flops_per_s": {"float32": 1e11}}
    result = measure_case(case, REGISTRY.get("flash-decoding"), FAST, calibration=calibration)
    assert result.status == "ok" and result.accuracy.ok is True, (result.reason, result.accuracy)
    assert result.telemetry["bytes_moved"] == case.bytes_moved


def test_flex_reads_the_pool_through_its_paged_mask(flex):
    for fields in (dict(seq_len=1, kv_len=100, page_size=16, batch=3, causal=True),     # key blocks of one page
                   dict(seq_len=2, kv_len=150, page_size=7, batch=2, causal=True)):     # 128-slot blocks
        case = paged_case("flex", dtype="float32", head_dim=32, **fields)
        inputs = make_inputs(case)
        expected = softmax_attention(*(t.double() for t in inputs.tensors()), causal=True)
        torch.testing.assert_close(flex.prepare(case, inputs)().double(), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ flash-attn's block_table, without a GPU


def flash_attn_kvcache_by_its_docstring(q, k_cache, v_cache, arguments):
    """flash_attn_with_kvcache as documented, in float64: sequence b reads key j < cache_seqlens[b] at
    k_cache[block_table[b, j // page_size], j % page_size]; causal aligned at the bottom right; q (B, N, H, d)."""
    batch, seq_len, heads, dim = q.shape
    page_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    out = torch.zeros(batch, seq_len, heads, v_cache.shape[-1], dtype=torch.float64)
    for b in range(batch):
        length = int(arguments["cache_seqlens"][b])
        pages = [int(p) for p in arguments["block_table"][b]]
        keys = torch.stack([k_cache[pages[j // page_size], j % page_size] for j in range(length)])   # (M, Hkv, d)
        values = torch.stack([v_cache[pages[j // page_size], j % page_size] for j in range(length)])
        for h in range(heads):
            kv = h // (heads // kv_heads)
            scores = q[b, :, h].double() @ keys[:, kv].double().T * arguments["softmax_scale"]   # (N, M)
            if arguments["causal"]:
                i = torch.arange(seq_len)[:, None] + length - seq_len
                scores = scores.masked_fill(torch.arange(length)[None, :] > i, float("-inf"))
            out[b, :, h] = torch.softmax(scores, dim=-1) @ values[:, kv].double()
    return out


def test_flash_attn_kvcache_arguments_read_the_pool_as_our_cache():
    case = Case(variant="flash-attn", seq_len=2, kv_len=600, batch=2, heads=4, kv_heads=2, head_dim=16,
                causal=True, page_size=256, dtype="float64")
    inputs = make_inputs(case)
    q, k, v = inputs.tensors()
    k_pool, v_pool, table = paged_cache(case, k, v)
    arguments = flash_attn_pkg.flash_attn_kvcache_arguments(case, table)
    assert arguments["block_table"].dtype == torch.int32 and arguments["block_table"].is_contiguous()
    assert torch.equal(arguments["block_table"], case_block_table(case))
    assert arguments["cache_seqlens"].tolist() == [600, 600] and arguments["cache_seqlens"].dtype == torch.int32
    assert arguments["softmax_scale"] == 1 / math.sqrt(16) and arguments["window_size"] == (-1, -1)
    emulated = flash_attn_kvcache_by_its_docstring(q.transpose(1, 2), k_pool, v_pool, arguments)
    torch.testing.assert_close(emulated.transpose(1, 2), softmax_attention(q, k, v, causal=True),
                               rtol=1e-12, atol=1e-12)


def test_flash_attn_takes_pages_of_256_keys_only_and_needs_2_5():
    variant = REGISTRY.get("flash-attn")

    def reasons(page_size):
        return variant.unsupported_reasons(Case(variant="flash-attn", seq_len=1, kv_len=4096, dtype="float16",
                                                page_size=page_size))

    assert any("only in pages of a multiple of 256 keys, not page_size 16" in r for r in reasons(16))
    assert reasons(256) == reasons(0) == reasons(512)
    old = flash_attn_pkg.version_reasons(Case(variant="flash-attn", seq_len=1, kv_len=512, page_size=256), (2, 4))
    assert old == ["the installed flash-attn 2.4 has no paged KV cache (flash_attn_with_kvcache's block_table), "
                   "added in flash-attn 2.5 (pip install -U flash-attn)"]


# ------------------------------------------------------------------ on a GPU


@pytest.mark.cuda
@pytest.mark.parametrize("variant", [*PAGED_CPU_VARIANTS, "flex", "flash-attn"])
@pytest.mark.parametrize("page_size", [16, 256])
def test_paged_decode_on_cuda_is_accurate(variant, page_size):
    case = Case(variant=variant, device="cuda", dtype="bfloat16", seq_len=1, kv_len=4000, batch=3, heads=8,
                kv_heads=2, head_dim=64, causal=True, page_size=page_size)
    measure_accurate(case, REGISTRY.get(variant), FAST)

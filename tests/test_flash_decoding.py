"""flash-decoding: split-KV partial softmaxes combined by log-sum-exp equal exact attention (float64 reference)."""

from __future__ import annotations

import pytest
import torch

from attnbench import softmax_attention
from attnbench.core.case import Case
from attnbench.variants.flash_decoding import FlashDecoding, split_count, split_kv_attention

SHAPES = [  # (seq_len, kv_len, heads, kv_heads, splits): MQA, GQA, leftover keys in front, one split per key
    (1, 4096, 8, 1, 32), (4, 1000, 32, 8, 7), (3, 77, 4, 2, 5), (2, 64, 4, 4, 32), (5, 64, 4, 1, 64),
]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq_len, kv_len, heads, kv_heads, splits", SHAPES)
def test_splits_combine_to_exact_softmax_attention(seq_len, kv_len, heads, kv_heads, splits, causal):
    generator = torch.Generator().manual_seed(seq_len * 1000 + kv_len)
    q = torch.randn(2, heads, seq_len, 16, generator=generator, dtype=torch.float64)
    k = torch.randn(2, kv_heads, kv_len, 16, generator=generator, dtype=torch.float64)
    v = torch.randn(2, kv_heads, kv_len, 24, generator=generator, dtype=torch.float64)   # v_head_dim != head_dim
    variant = FlashDecoding()
    case = Case(variant=variant.name, batch=2, seq_len=seq_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads,
                head_dim=16, v_head_dim=24, causal=causal, dtype="float64", params={"splits": splits})
    assert not variant.unsupported_reasons(case)
    from attnbench.core.variant import AttentionInputs

    out = variant.prepare(case, AttentionInputs(q, k, v))()
    want = softmax_attention(q, k, v, causal=causal)
    assert out.shape == (2, heads, seq_len, 24)
    assert torch.allclose(out, want, rtol=1e-12, atol=1e-12), float((out - want).abs().max())


def test_default_split_count_follows_the_threads_and_keeps_a_query_length_per_split():
    assert split_count(0, 32768, 1, causal=True) == 16 * torch.get_num_threads()
    assert split_count(64, 100, 4, causal=True) == 25                      # 4 keys a split at least
    assert split_count(64, 10, 1, causal=False) == 10


def test_gradients_match_the_float64_reference():
    generator = torch.Generator().manual_seed(3)
    tensors = [torch.randn(1, h, n, 8, generator=generator, dtype=torch.float64, requires_grad=True)
               for h, n in ((4, 3), (2, 50), (2, 50))]
    out = split_kv_attention(*tensors, splits=6)
    want = softmax_attention(*tensors, causal=False)
    grads = torch.autograd.grad(out.sum(), tensors)
    want_grads = torch.autograd.grad(want.sum(), tensors)
    for got, expected in zip(grads, want_grads, strict=True):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)

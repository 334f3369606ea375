"""longformer picks its execution per case: one dense masked SDPA call where the band is dense, its chunks elsewhere."""

from __future__ import annotations

import pytest
import torch

from attnbench.core.case import Case
from attnbench.core.variant import AttentionInputs
from attnbench.variants.longformer import DENSE_ABOVE, Longformer, sparse_attention_reference


@pytest.mark.parametrize("seq_len, window, causal, expected", [
    (1024, 256, False, "dense"), (1024, 256, True, "dense"), (4096, 256, False, "banded"),
    (1024, 128, True, "banded"), (512, 128, False, "dense"), (16384, 256, True, "banded"),
])
def test_the_choice_follows_the_share_of_pairs_the_chunks_compute(seq_len, window, causal, expected):
    variant = Longformer()
    case = Case(variant="longformer", seq_len=seq_len, causal=causal, params={"window": window, "global_tokens": 0})
    assert variant.execution(case) == expected
    share = variant._slots(case) / seq_len ** 2
    assert (share > DENSE_ABOVE) == (expected == "dense")
    dense_flops = 4 * case.batch * case.heads * case.head_dim * seq_len ** 2
    assert (variant.performed_flops(case) == dense_flops) == (expected == "dense")


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("global_tokens", [0, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_both_executions_match_the_float64_pattern(causal, global_tokens, mode):
    variant = Longformer()
    for seq_len, window in ((96, 40), (400, 16)):                        # dense, then banded
        case = Case(variant="longformer", seq_len=seq_len, heads=2, head_dim=16, causal=causal, dtype="float64",
                    mode=mode, params={"window": window, "global_tokens": global_tokens})
        generator = torch.Generator().manual_seed(seq_len)
        q, k, v = (torch.randn(1, 2, seq_len, 16, generator=generator, dtype=torch.float64,
                               requires_grad=mode == "fwd_bwd") for _ in range(3))
        out = variant.prepare(case, AttentionInputs(q, k, v))()
        want = sparse_attention_reference(q, k, v, window, global_tokens, causal)
        assert torch.allclose(out, want, rtol=1e-10, atol=1e-12), (variant.execution(case), seq_len)
        if mode == "fwd_bwd":
            grads = torch.autograd.grad(out.sum(), (q, k, v))
            for got, expected in zip(grads, torch.autograd.grad(want.sum(), (q, k, v)), strict=True):
                assert torch.allclose(got, expected, rtol=1e-9, atol=1e-11)
    assert {variant.execution(Case(variant="longformer", seq_len=n, heads=2, head_dim=16, causal=causal,
                                   params={"window": w, "global_tokens": global_tokens}))
            for n, w in ((96, 40), (400, 16))} == {"dense", "banded"}

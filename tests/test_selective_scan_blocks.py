"""mamba-scan's no-autograd path (compiled time blocks) equals the plain sequential recurrence."""

from __future__ import annotations

import torch

from attnbench.variants._selective_scan import selective_scan_blocks
from attnbench.variants.mamba import selective_scan_chunked, selective_scan_sequential


def _projections(seq_len: int, inner: int = 12, state_dim: int = 4, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seq_len)
    delta = torch.nn.functional.softplus(torch.randn(2, seq_len, inner, generator=generator) - 2).to(dtype)
    x = torch.randn(2, seq_len, inner, generator=generator).to(dtype)
    b, c = (torch.randn(2, seq_len, state_dim, generator=generator).to(dtype) for _ in range(2))
    a = -torch.arange(1, state_dim + 1, dtype=dtype).expand(inner, state_dim)
    return delta, x, b, c, a


def test_blocks_of_time_give_the_recurrence_at_lengths_that_are_not_whole_blocks():
    for seq_len in (37, 48):
        projections = _projections(seq_len)
        want = selective_scan_sequential(*(t.double() for t in projections))
        with torch.inference_mode():
            got = selective_scan_blocks(*projections, steps=16)
            fast = selective_scan_chunked(*projections, chunk=16)
        assert got.shape == want.shape == (2, seq_len, 12)
        for out in (got, fast):
            assert float((out.double() - want).norm() / want.norm()) < 1e-6


def test_under_autograd_the_eager_chunks_still_run_and_give_gradients():
    delta, x, b, c, a = _projections(40, dtype=torch.float64)
    x.requires_grad_(True)
    out = selective_scan_chunked(delta, x, b, c, a, chunk=16)
    want = selective_scan_sequential(delta, x, b, c, a)
    assert torch.allclose(out, want, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), [x])
    (want_grad,) = torch.autograd.grad(want.sum(), [x])
    assert torch.allclose(grad, want_grad, rtol=1e-10, atol=1e-12)

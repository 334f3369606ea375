"""Attention sinks against the definition, written as a plain loop over rows and keys."""

from __future__ import annotations

import math

import torch

from attnbench.attention.sinks import rescale_for_sinks, sink_logits, softmax_with_sinks


def sink_attention_by_definition(q, k, v, sinks, causal):
    """o_i = Σ_j exp(x_ij) v_j / (exp(s_h) + Σ_j exp(x_ij)), one row at a time, in float64."""
    batch, heads, seq_len, d = q.shape
    out = torch.zeros(batch, heads, seq_len, v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(seq_len):
                keys = range(i + 1) if causal else range(k.shape[-2])
                terms = [math.exp(float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d)) for j in keys]
                denominator = math.exp(float(sinks[h])) + sum(terms)
                out[b, h, i] = sum(t * v[b, h, j] for t, j in zip(terms, keys, strict=True)) / denominator
    return out


def test_the_reference_and_the_lse_rescale_both_match_the_definition():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    sinks = sink_logits(seed=5, heads=3).double()
    for causal in (False, True):
        expected = sink_attention_by_definition(q, k, v, sinks, causal)
        scores = q @ k.transpose(-2, -1) / 2.0                                        # √4
        if causal:
            scores = scores.masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
        reference = softmax_with_sinks(scores, sinks) @ v
        plain = torch.softmax(scores, dim=-1) @ v
        rescaled = rescale_for_sinks(plain, torch.logsumexp(scores, dim=-1), sinks)
        torch.testing.assert_close(reference, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rescaled.double(), expected, rtol=1e-6, atol=1e-6)   # the gate runs in float32


def test_sinks_take_weight_from_the_keys_and_a_masked_row_stays_zero():
    scores = torch.tensor([[[[0.0, 0.0], [float("-inf"), float("-inf")]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    weights = softmax_with_sinks(scores, torch.tensor([0.0]))
    torch.testing.assert_close(weights, torch.tensor([[[[1 / 3, 1 / 3], [0.0, 0.0]]]], dtype=torch.float64))
    out = rescale_for_sinks(torch.zeros(1, 1, 2, 3), torch.tensor([[[0.0, float("-inf")]]]), torch.tensor([0.0]))
    assert torch.equal(out, torch.zeros(1, 1, 2, 3))


def test_sink_logits_are_fixed_by_the_seed():
    assert torch.equal(sink_logits(3, 8), sink_logits(3, 8))
    assert not torch.equal(sink_logits(3, 8), sink_logits(4, 8))
    assert sink_logits(3, 8).dtype == torch.float32 and sink_logits(3, 8).shape == (8,)

"""Attention sinks: one learned logit per head that joins every row's softmax denominator.

gpt-oss-style sinks add, for head h, a virtual key whose score is s_h and whose value is zero:

    o_i = Σ_j exp(x_ij) v_j / (exp(s_h) + Σ_j exp(x_ij))          x_ij the scaled, masked scores

so a row may put weight on "nothing". A kernel that returns each row's log-sum-exp
L_i = log Σ_j exp(x_ij) gets the same output from its plain softmax output o'_i:

    o_i = o'_i · exp(L_i) / (exp(L_i) + exp(s_h)) = o'_i · σ(L_i − s_h)

which is how FlexAttention and flash-attn reach sinks here (`rescale_for_sinks`). The float64
reference appends the sink as a column (`softmax_with_sinks`).
"""

from __future__ import annotations

import torch

SINK_TAG = 4099
SINK_STD = 1.0


def sink_logits(seed: int, heads: int) -> torch.Tensor:
    """(H,) float32 per-head sink logits, N(0, SINK_STD²), fixed by the case's seed (as a learned weight is)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * SINK_TAG + 17)
    return torch.randn(heads, generator=generator, dtype=torch.float32) * SINK_STD


def case_sinks(case, device=None) -> torch.Tensor | None:
    """(H,) float32 sink logits of `case` (on `device`), or None when the case has no sinks."""
    if getattr(case, "sinks", "none") == "none":
        return None
    return sink_logits(case.seed, case.heads).to(device or "cpu")


def softmax_with_sinks(scores: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """(B, H, R, M) softmax weights over the keys when each head's denominator also holds exp(s_h).

    `scores` are the scaled, modified and masked scores (-inf where masked); `sinks` is (H,).
    A fully masked row puts all its weight on the sink: its weights are 0.
    """
    sink = sinks.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)   # (B, H, R, 1)
    weights = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)              # (B, H, R, M + 1)
    return weights[..., :-1]                                                         # (B, H, R, M)


def rescale_for_sinks(out: torch.Tensor, lse: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """A plain softmax output (B, H, N, d_v) with its row log-sum-exp `lse` (B, H, N) turned into the
    output with sinks (H,): out · σ(lse − s_h). A fully masked row (lse = -inf) stays 0."""
    gate = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))                # (B, H, N)
    return (out.float() * gate.unsqueeze(-1)).to(out.dtype)                          # (B, H, N, d_v)

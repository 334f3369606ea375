"""Score mods, defined once and used by every variant and reference.

A score mod rewrites each scaled score ``s = q·k / √d`` before the mask and
the softmax. It is one function written the way FlexAttention and
attention-gym write a ``score_mod``: ``score_mod(score, b, h, q_idx, kv_idx)``
returns the new score. The same function gives

- the reference's and naive's scores: `apply_score_mod` over a (B, H, R, M) block;
- an SDPA float mask, for mods that only add a bias: `score_bias` (ALiBi);
- Flex's ``score_mod`` argument, as it is;
- flash-attn's ``alibi_slopes`` and ``softcap`` arguments: `alibi_slopes` and the cap.

The mods of a case's `score_mod` axis (`case_score_mod`):

- ``alibi``: ``s - slope_h · |q' - kv|`` with q' the end-aligned query position
  (``q + kv_len - seq_len``) and ALiBi's slopes ``2^(-8(h+1)/H)`` (Press et al.,
  2022; the interleaved form for H not a power of two). Under a causal mask
  this is attention-gym's ``s + slope_h · (kv - q)``; without one it is
  flash-attn's symmetric bias ``-slope · |i + M - N - j|``.
- ``softcap:C``: ``C · tanh(s / C)`` (Gemma 2's logit soft-capping, flash-attn's ``softcap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from attnbench.attention.masks import causal_offset
from attnbench.core.scoremodspec import parse_score_mod

ScoreMod = Callable[..., torch.Tensor]


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's per-head slopes: ``2^(-8(h+1)/H)`` for H a power of two, else the closest power's and every other of twice it."""
    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][:heads - closest]


def alibi_score_mod(heads: int, seq_len: int, kv_len: int,
                    device: torch.device | str | None = None) -> ScoreMod:
    """The ALiBi score mod: ``score - slope[h] · |q_idx + kv_len - seq_len - kv_idx|``.

    The slopes are kept in float64 and rounded to the score's dtype where they are used, so a
    float64 reference or kernel sees the true slopes (most of them are not representable in float32).
    """
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float64, device=device)      # (H,)
    offset = causal_offset(seq_len, kv_len)

    def alibi(score, b, h, q_idx, kv_idx):
        distance = (q_idx + offset - kv_idx).abs()
        return score - slopes[h].to(score.dtype) * distance.to(score.dtype)

    return alibi


def softcap_score_mod(cap: float) -> ScoreMod:
    """The soft-capping score mod: ``cap · tanh(score / cap)``."""
    def softcap(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap

    return softcap


def case_score_mod(case, device: torch.device | str | None = None) -> ScoreMod | None:
    """The score mod of `case`'s `score_mod` axis, or None for ``none``."""
    spec = parse_score_mod(getattr(case, "score_mod", "none"))
    if spec.kind == "alibi":
        return alibi_score_mod(case.heads, case.seq_len, case.kv_len, device=device)
    if spec.kind == "softcap":
        return softcap_score_mod(spec.cap)
    return None


def case_softcap(case) -> float | None:
    """C of a ``softcap:C`` case, else None (for kernels that take the cap as a number)."""
    spec = parse_score_mod(getattr(case, "score_mod", "none"))
    return spec.cap if spec.kind == "softcap" else None


def apply_score_mod(scores: torch.Tensor, score_mod: ScoreMod, seq_len: int, kv_len: int,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
    """`score_mod` at every entry of scaled scores (B, H, R, M), for all N query rows or just `rows`."""
    heads = scores.shape[-3]
    head = torch.arange(heads, device=scores.device)[:, None, None]                          # (H, 1, 1)
    query = (torch.arange(seq_len, device=scores.device) if rows is None
             else torch.as_tensor(rows, device=scores.device))[None, :, None]                 # (1, R, 1)
    key = torch.arange(kv_len, device=scores.device)[None, None, :]                           # (1, 1, M)
    return score_mod(scores, None, head, query, key)                                         # (B, H, R, M)


def score_bias(case, *, dtype: torch.dtype = torch.float32, rows: torch.Tensor | None = None,
               device: torch.device | str | None = None) -> torch.Tensor | None:
    """(H, R, M) additive bias of `case`'s score mod (ALiBi), or None for ``none``; ValueError for a mod that is not a bias."""
    spec = parse_score_mod(getattr(case, "score_mod", "none"))
    if spec.kind == "none":
        return None
    if spec.kind != "alibi":
        raise ValueError(f"score_mod {spec.text} is not an additive bias; only alibi is")
    rows_count = case.seq_len if rows is None else len(rows)
    zeros = torch.zeros(1, case.heads, rows_count, case.kv_len, dtype=dtype, device=device)
    return apply_score_mod(zeros, case_score_mod(case, device=device), case.seq_len, case.kv_len, rows=rows)[0]

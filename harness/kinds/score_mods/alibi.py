"""``alibi``: ``s - slope_h · |q' - kv|``, q' the end-aligned query position (``q + kv_len - seq_len``).

ALiBi's slopes ``2^(-8(h+1)/H)`` (Press et al., 2022; the interleaved form for
H not a power of two). Under a causal mask this is attention-gym's
``s + slope_h · (kv - q)``; without one it is flash-attn's symmetric bias
``-slope · |i + M - N - j|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attnbench.kinds.masks.predicates import causal_offset
from attnbench.kinds.score_mods.base import ScoreMod, ScoreModKind


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's per-head slopes: ``2^(-8(h+1)/H)`` for H a power of two, else the closest power's and every other of twice it."""
    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][:heads - closest]


def alibi_score_mod(heads: int, seq_len: int, kv_len: int, device=None) -> ScoreMod:
    """The ALiBi score mod: ``score - slope[h] · |q_idx + kv_len - seq_len - kv_idx|``.

    The slopes are kept in float64 and rounded to the score's dtype where they are used, so a
    float64 reference or kernel sees the true slopes (most of them are not representable in float32).
    """
    import torch

    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float64, device=device)      # (H,)
    offset = causal_offset(seq_len, kv_len)

    def alibi(score, b, h, q_idx, kv_idx):
        distance = (q_idx + offset - kv_idx).abs()
        return score - slopes[h].to(score.dtype) * distance.to(score.dtype)

    return alibi


@dataclass(frozen=True)
class Alibi(ScoreModKind):
    def score_mod(self, case, arg, device=None) -> ScoreMod:
        return alibi_score_mod(case.heads, case.seq_len, case.kv_len, device=device)


ALIBI = Alibi("alibi", "alibi (ALiBi's per-head linear distance penalty with the standard slopes 2^(-8(h+1)/H))",
              additive=True)

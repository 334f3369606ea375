"""What a score-mod kind gives: its ``score_mod`` for a case, its cap, its additive bias; and ``none``, the base kind.

A score mod is written the way FlexAttention and attention-gym write one:
``score_mod(score, b, h, q_idx, kv_idx)`` returns the new score. The same
function gives the reference's and naive's scores (`apply_score_mod` over a
(B, H, R, M) block), an SDPA float mask for a mod that only adds a bias
(`ScoreModKind.bias`: ALiBi), Flex's ``score_mod`` argument as it is, and
flash-attn's ``alibi_slopes`` and ``softcap`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnbench.kinds.family import Kind

ScoreMod = Callable[..., Any]


@dataclass(frozen=True)
class ScoreModKind(Kind):
    """A kind of the `score_mod` axis: it rewrites each scaled score ``s = q·k / √d`` before the mask and the softmax.

    As it is, the kind is ``none``: scores stay as they are. `additive`: the
    mod only adds a bias that does not depend on the score, so an SDPA float
    mask can carry it (`bias`).
    """

    additive: bool = False

    def score_mod(self, case, arg: Any, device=None) -> ScoreMod | None:
        """The Flex ``score_mod(score, b, h, q_idx, kv_idx)`` of `case`; None when scores stay as they are."""
        return None

    def cap(self, arg: Any) -> float | None:
        """C for kernels that take a soft cap as a number; None for every other kind."""
        return None

    def bias(self, case, arg: Any, *, dtype=None, rows=None, device=None):
        """(H, R, M) additive bias of this mod for `case` (R: every query row, or `rows`), or None when scores stay
        as they are; ValueError for a mod that is not a bias."""
        import torch

        mod = self.score_mod(case, arg, device=device)
        if mod is None:
            return None
        if not self.additive:
            raise ValueError(f"score_mod {self.text(arg)} is not an additive bias")
        rows_count = case.seq_len if rows is None else len(rows)
        zeros = torch.zeros(1, case.heads, rows_count, case.kv_len, dtype=dtype or torch.float32, device=device)
        return apply_score_mod(zeros, mod, case.seq_len, case.kv_len, rows=rows)[0]


def apply_score_mod(scores, score_mod: ScoreMod, seq_len: int, kv_len: int, rows=None):
    """`score_mod` at every entry of scaled scores (B, H, R, M), for all N query rows or just `rows`."""
    import torch

    heads = scores.shape[-3]
    head = torch.arange(heads, device=scores.device)[:, None, None]                          # (H, 1, 1)
    query = (torch.arange(seq_len, device=scores.device) if rows is None
             else torch.as_tensor(rows, device=scores.device))[None, :, None]                 # (1, R, 1)
    key = torch.arange(kv_len, device=scores.device)[None, None, :]                           # (1, 1, M)
    return score_mod(scores, None, head, query, key)                                         # (B, H, R, M)


NONE = ScoreModKind("none", "none")

"""Score mods, defined once and used by every variant and reference.

A score mod rewrites each scaled score ``s = q·k / √d`` before the mask and
the softmax. It is one function written the way FlexAttention and
attention-gym write a ``score_mod``: ``score_mod(score, b, h, q_idx, kv_idx)``
returns the new score. The same function gives

- the reference's and naive's scores: `apply_score_mod` over a (B, H, R, M) block;
- an SDPA float mask, for mods that only add a bias: `score_bias` (ALiBi);
- Flex's ``score_mod`` argument, as it is;
- flash-attn's ``alibi_slopes`` and ``softcap`` arguments: `alibi_slopes` and the cap.

Each kind of a case's `score_mod` axis (`case_score_mod`) is one file of
`attnbench.kinds.score_mods`: ``alibi`` (ALiBi's per-head distance penalty)
and ``softcap:C`` (``C · tanh(s / C)``).
"""

from __future__ import annotations

import torch

from attnbench.kinds.score_mods import SCORE_MODS, ScoreMod, score_mod_of
from attnbench.kinds.score_mods.alibi import alibi_slopes

__all__ = ["ScoreMod", "alibi_slopes", "apply_score_mod", "case_score_mod", "case_softcap", "score_bias"]


def case_score_mod(case, device: torch.device | str | None = None) -> ScoreMod | None:
    """The score mod of `case`'s `score_mod` axis, or None for ``none``."""
    chosen = score_mod_of(case)
    return chosen.kind.score_mod(case, chosen.arg, device=device)


def case_softcap(case) -> float | None:
    """C of a ``softcap:C`` case, else None (for kernels that take the cap as a number)."""
    chosen = score_mod_of(case)
    return chosen.kind.cap(chosen.arg)


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
    chosen = score_mod_of(case)
    mod = chosen.kind.score_mod(case, chosen.arg, device=device)
    if mod is None:
        return None
    if not chosen.kind.additive:
        additive = ", ".join(kind.name for kind in SCORE_MODS if kind.additive)
        raise ValueError(f"score_mod {chosen.text} is not an additive bias; only {additive} is")
    rows_count = case.seq_len if rows is None else len(rows)
    zeros = torch.zeros(1, case.heads, rows_count, case.kv_len, dtype=dtype, device=device)
    return apply_score_mod(zeros, mod, case.seq_len, case.kv_len, rows=rows)[0]

"""Fidelity of attention weights: how closely an approximation's weights follow exact softmax's, row by row.

For a variant whose case output stands in for softmax attention
(``variant.approximation(case) == "softmax_attention"``) and that returns its
weights (`Variant.attention_weights`: Performer's φ(q)·φ(k) normalised per row,
Longformer's banded softmax), each query row p (exact softmax weights over the
M keys, under the case's mask and score mod) is compared with the row q the
variant puts on the same keys:

- ``approx_kl``: the mean over rows of KL(p ‖ q) = Σ_j p_j log(p_j / q_j), in
  nats; 0 when the rows agree. Keys with p_j = 0 add nothing; q_j is floored
  at `KL_FLOOR` (1e-12) so a key the approximation drops (a band that leaves it
  out) costs p_j·log(p_j / 1e-12), large but finite.
- ``approx_entropy_ratio``: the mean entropy of the q rows over the mean
  entropy of the p rows (ratio of means, not mean of ratios: a row that sees
  one key, such as causal row 0, has entropy 0). Below 1 the approximation is
  more peaked than softmax, above 1 flatter; None when every exact row has
  entropy 0.
- ``approx_topk_mass``: the share of softmax's top-k mass the approximation
  recovers: for each row, with S the k keys softmax weighs most,
  Σ_{j∈S} min(p_j, q_j) / Σ_{j∈S} p_j, averaged over rows (k = min(top_k, M);
  keys with p_j = 0 are left out of S, ties are broken by `torch.topk`).
  In [0, 1], 1 when every one of those keys gets at least its exact weight.
  Capped per key so that weight piled on a few keys (a renormalised band)
  cannot make up for keys it misses; over-concentration shows in the
  entropy ratio instead.
- ``rows``: the query rows compared (B·H·rows of them enter each mean);
  ``top_k``: the k used; ``negative_rows``: approximate rows that had negative
  weights (see below); ``dropped_mass``: the mean exact mass on keys the
  approximation gives less than the floor. A sparse pattern (Longformer's band)
  drops keys outright, and then its KL is mostly dropped_mass × log(1/floor)
  (27.6 nats per unit of mass): compare such KLs with each other, and read
  dropped_mass, entropy ratio and top-k mass beside them.

Approximate rows are made distributions first: negative weights (a kernel whose
feature map is not positive; Performer's positive features never are) are
clamped to 0 and the row renormalised to sum 1; a row left with no mass stays
0 (every key then costs the floor). Exact rows with no visible key (a fully
masked row) are left out of every mean. Non-finite approximate weights raise:
the caller stores that as a warning, never as a failed cell.

The rows are the accuracy check's seeded sample (`attnbench.measure.cell.accuracy`), at
most `FIDELITY_MAX_ROWS` of them, evenly spaced through it so a causal case's
long rows are represented; variants that take ``rows=`` in `attention_weights`
form only those rows, in chunks of about `CHUNK_BYTES` of weights.
"""

from __future__ import annotations

import inspect

import torch

from attnbench.attention.reference import softmax_weights
from attnbench.core.case import Case
from attnbench.core.variant import AttentionInputs, Variant

KL_FLOOR = 1e-12
DEFAULT_TOP_K = 32
FIDELITY_MAX_ROWS = 256
CHUNK_BYTES = 256 * 2**20      # float64 weights of one chunk of rows, for each of exact and approximate


def weight_fidelity(exact: torch.Tensor, approx: torch.Tensor, top_k: int = DEFAULT_TOP_K) -> dict:
    """KL, entropy ratio and top-k mass of `approx` rows against `exact` rows, both (..., R, M) float64.

    Returns ``{"approx_kl", "approx_entropy_ratio", "approx_topk_mass", "rows", "top_k",
    "negative_rows", "dropped_mass"}``, ``rows`` being R (the size of the second-last axis); see the module
    docstring for the definitions.
    """
    return _reduce([row_statistics(exact, approx, top_k)], rows=exact.shape[-2], top_k=min(top_k, exact.shape[-1]))


def row_statistics(exact: torch.Tensor, approx: torch.Tensor, top_k: int = DEFAULT_TOP_K) -> dict[str, torch.Tensor]:
    """Per-row terms of `weight_fidelity`, each flattened to (rows,): kl, the two entropies, top-k masses, ..."""
    if exact.shape != approx.shape:
        raise ValueError(f"exact weights {tuple(exact.shape)} and approximate weights {tuple(approx.shape)} differ")
    bad = int((~torch.isfinite(approx)).sum())
    if bad:
        raise ValueError(f"the approximate weights have {bad} non-finite values")
    p = exact.double().reshape(-1, exact.shape[-1])                       # (rows, M)
    q = approx.double().reshape(-1, approx.shape[-1])                     # (rows, M)
    negative = (q < 0).any(dim=-1)                                        # (rows,)
    q = q.clamp(min=0.0)
    mass = q.sum(dim=-1, keepdim=True)                                    # (rows, 1)
    q = torch.where(mass > 0, q / mass.clamp(min=torch.finfo(q.dtype).tiny), q)
    kl = (torch.xlogy(p, p) - p * q.clamp(min=KL_FLOOR).log()).sum(dim=-1)
    entropy_exact = -torch.xlogy(p, p).sum(dim=-1)
    entropy_approx = -torch.xlogy(q, q).sum(dim=-1)
    k = min(top_k, p.shape[-1])
    top_p, top_index = torch.topk(p, k, dim=-1)                           # (rows, k)
    visible = top_p > 0
    top_q = torch.minimum(q.gather(-1, top_index), top_p).masked_fill(~visible, 0.0)   # (rows, k)
    return {"kl": kl, "entropy_exact": entropy_exact, "entropy_approx": entropy_approx,
            "top_exact": top_p.masked_fill(~visible, 0.0).sum(dim=-1), "top_approx": top_q.sum(dim=-1),
            "dropped": p.masked_fill(q >= KL_FLOOR, 0.0).sum(dim=-1), "negative": negative, "live": p.sum(dim=-1) > 0}


def _reduce(parts: list[dict[str, torch.Tensor]], rows: int, top_k: int) -> dict:
    stats = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    live = stats["live"]
    if not bool(live.any()):
        raise ValueError("every exact row is fully masked: no weights to compare")
    entropy_exact = float(stats["entropy_exact"][live].mean())
    entropy_approx = float(stats["entropy_approx"][live].mean())
    topk_mass = stats["top_approx"][live] / stats["top_exact"][live]
    return {
        "approx_kl": float(stats["kl"][live].mean()),
        "approx_entropy_ratio": entropy_approx / entropy_exact if entropy_exact > 0 else None,
        "approx_topk_mass": float(topk_mass.mean()),
        "rows": rows,
        "top_k": top_k,
        "negative_rows": int(stats["negative"][live].sum()),
        "dropped_mass": float(stats["dropped"][live].mean()),
    }


def exact_weights(case: Case, inputs: AttentionInputs, rows: torch.Tensor) -> torch.Tensor:
    """Softmax weights of query `rows` under the case's score mod and mask, (B, H, R, M) float64.

    From the float64 inputs: scores = q_rows kᵀ/√d, the score mod, the mask, softmax; with
    kv_heads < heads each key head is repeated for its query heads. A fully masked row is 0.
    """
    q, k, _ = inputs.tensors()
    return softmax_weights(case, q, k, rows)


def fidelity_rows(seq_len: int, rows: torch.Tensor | None, limit: int = FIDELITY_MAX_ROWS) -> torch.Tensor:
    """The query rows to compare: `rows` (every row when None), thinned to `limit` evenly spaced ones."""
    rows = torch.arange(seq_len) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    if len(rows) <= limit:
        return rows
    return rows[torch.linspace(0, len(rows) - 1, limit).round().long()]


def takes_rows(variant: Variant) -> bool:
    """Whether the variant's `attention_weights` accepts ``rows=`` (forms only those query rows)."""
    parameters = inspect.signature(variant.attention_weights).parameters.values()
    return any(p.name == "rows" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def variant_weights(variant: Variant, case: Case, inputs: AttentionInputs, rows: torch.Tensor) -> torch.Tensor | None:
    """The variant's weights of query `rows`, (B, H, R, M): by ``rows=`` where it takes it, else all rows indexed."""
    if takes_rows(variant):
        return variant.attention_weights(case, inputs, rows=rows)
    weights = variant.attention_weights(case, inputs)
    return None if weights is None else weights[..., rows, :]


def measure_fidelity(case: Case, variant: Variant, inputs: AttentionInputs, rows: torch.Tensor,
                     top_k: int = DEFAULT_TOP_K) -> dict | None:
    """`weight_fidelity` of the variant's weights on `rows` against exact softmax's; None without weights.

    `inputs` are the float64 copies the accuracy check uses. Rows go in chunks so that each
    chunk's (B, H, rows, M) weights stay near `CHUNK_BYTES`.
    """
    per_row = case.batch * case.heads * case.kv_len * 8
    chunk = max(1, CHUNK_BYTES // per_row) if takes_rows(variant) else len(rows)
    parts = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        approx = variant_weights(variant, case, inputs, part)
        if approx is None:
            return None
        want = (case.batch, case.heads, len(part), case.kv_len)
        if tuple(approx.shape) != want:
            raise ValueError(f"attention_weights gave shape {tuple(approx.shape)}, expected {want}")
        parts.append(row_statistics(exact_weights(case, inputs, part), approx, top_k))
        del approx
    return _reduce(parts, rows=len(rows), top_k=min(top_k, case.kv_len))

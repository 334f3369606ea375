"""Structured q, k, v for the `inputs` axis: the distributions attention sees in real models.

`draw_qkv(case)` gives float32 CPU tensors q (B, H, N, d), k (B, Hkv, M, d)
and v (B, Hkv, M, dv), drawn from one ``torch.Generator`` seeded with
`case.seed`, for every kind of `attnbench.kinds.inputs` but ``file``:

- ``iid``: q, k ~ N(0, qk_std²), v ~ N(0, 1), drawn q, then k, then v: the
  values `attnbench.measure.inputs.make_inputs` has always drawn.
- ``outliers:RATE`` (FlashAttention-3, Shah et al. 2024, §4.3): every entry of
  q, k and v is N(0, 1) + N(0, 100)·Bernoulli(RATE), q and k times qk_std.
  v gets the same mixture: the paper draws Q, K and V alike.
- ``clustered:C`` (Scatterbrain, Chen et al. 2021): C unit-variance centres per
  key/value head, shared by its keys and its query heads; every token is
  ``qk_std · (centre + SPREAD·noise) / √(1 + SPREAD²)`` around a centre drawn
  uniformly at random; v ~ N(0, 1).
- ``local:L`` (positional locality, with RoPE, Su et al. 2021): q and k are
  iid content plus one smooth signal along the sequence (a Gaussian process
  with correlation length L), rotated by RoPE at their positions (query i at
  key position i + M - N), so q_i·k_j is high for |i - j| within a few L.
- ``sinks:S`` (StreamingLLM, Xiao et al. 2023): the first S keys and every
  query share one direction, so every query puts most of its mass on those S
  keys; the rest is iid.

How qk_std sets the scale of the logits q·k/√d. For iid and outliers the
logits have standard deviation qk_std² (outliers: qk_std²·(1 + 100·RATE)).
For clustered qk_std is the temperature: a query's logit against a key of its
own cluster averages qk_std²·√d / (1 + SPREAD²), 0 against the others. For
local and sinks the iid content has logit std qk_std² as in iid, and the
structure adds logits of a fixed size (LOCAL_PEAK at |i - j| = 0, SINK_MARGIN
+ log(M/S) on a sink), so the structure holds at every qk_std; a larger
qk_std only adds content noise.

Measured with `row_entropy_summary`, `window_mass` and `sink_mass` on
B=1, H=8, d=64, qk_std=0.5, default parameters, 64 seeded rows, N = M
(entropy in nats; mass is the mean share of a row):

=====================  ===========  ===========  ===========  ===========
N, mask                1024 full    1024 causal  4096 full    4096 causal
=====================  ===========  ===========  ===========  ===========
log M / uniform rows   6.93 / 6.93  6.93 / 6.01  8.32 / 8.32  8.32 / 7.13
entropy iid            6.90         5.98         8.29         7.09
entropy outliers       6.89         5.96         8.23         7.05
entropy clustered      6.66         5.74         8.04         6.85
entropy local          4.34         3.70         4.53         3.84
entropy sinks          2.40         1.91         2.56         1.93
local: mass |i-j|≤256  0.986        0.983        0.956        0.960
iid: mass |i-j|≤256    0.442        0.592        0.120        0.282
sinks: mass on S=4     0.879        0.936        0.880        0.944
iid: mass on 4 keys    0.004        0.018        0.001        0.008
=====================  ===========  ===========  ===========  ===========

At qk_std=1 local keeps 0.98 (N=1024) and 0.93 (N=4096) within 256 keys,
and sinks keep 0.85 (S=4) and 0.78 (S=1) of each full row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnbench.attention.masks import case_mask_matrix, query_positions
from attnbench.attention.reference import repeat_kv, softmax_weights
from attnbench.kinds.inputs import inputs_of

OUTLIER_STD = 10.0          # N(0, 100): FlashAttention-3's outlier component
SPREAD = 0.5                # clustered: noise around a centre, relative to the centre's scale
LOCAL_PEAK = 10.0           # local: logit of a query against the key at its own position (content aside)
ROPE_BASE = 10000.0         # RoPE's θ_f = base^(-2f/d)
SINK_MARGIN = 2.0           # sinks: a sink's logit sits log(M/S) + SINK_MARGIN above the others

DESCRIPTIONS = {
    "iid": "q, k ~ N(0, qk_std²) and v ~ N(0, 1), independent entries (the default).",
    "outliers": "every entry N(0, 1) + N(0, 100)·Bernoulli(RATE), q and k times qk_std, default RATE 0.001 "
                "(FlashAttention-3, Shah et al. 2024, section 4.3).",
    "clustered": f"q and k around C shared centres per key/value head (default 8), spread {SPREAD} of a centre's "
                 "scale, cluster of each token drawn uniformly (Scatterbrain, Chen et al. 2021).",
    "local": f"content plus a smooth signal of correlation length L (default 64) along the sequence under RoPE, "
             f"peak logit {LOCAL_PEAK:g} at distance 0, so most mass lies within a few L of the diagonal "
             "(RoPE, Su et al. 2021).",
    "sinks": f"the first S keys (default 4) share a direction with every query, each sink's logit log(M/S) + "
             f"{SINK_MARGIN:g} above the rest, so they hold most of each row's mass (StreamingLLM, Xiao et al. 2023).",
    "file": "q, k and v read from a safetensors file.",
}


def draw_qkv(case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 CPU q (B, H, N, d), k (B, Hkv, M, d), v (B, Hkv, M, dv) of `case.inputs`, seeded by `case.seed`.

    ValueError for ``file``: those tensors are read, not drawn.
    """
    chosen = inputs_of(case)
    if chosen.kind.reads_file:
        raise ValueError(f"inputs {case.inputs!r} are read from a file, not drawn: draw_qkv takes "
                         f"{', '.join(DRAWERS)}")
    generator = torch.Generator().manual_seed(case.seed)
    return DRAWERS[chosen.name](case, chosen.kind.value(chosen.arg), generator)


def _shapes(case) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The shapes of q, k and v."""
    q = (case.batch, case.heads, case.seq_len, case.head_dim)
    k = (case.batch, case.kv_heads, case.kv_len, case.head_dim)
    v = (case.batch, case.kv_heads, case.kv_len, case.v_head_dim)
    return q, k, v


def _normal(shape, generator, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def _iid(case, parameter, generator):
    """q, k ~ N(0, qk_std²), v ~ N(0, 1), drawn in that order (make_inputs' order)."""
    q_shape, k_shape, v_shape = _shapes(case)
    q = _normal(q_shape, generator, case.qk_std)
    k = _normal(k_shape, generator, case.qk_std)
    v = _normal(v_shape, generator)
    return q, k, v


def _outliers(case, rate: float, generator):
    """FlashAttention-3's mixture N(0, 1) + N(0, 100)·Bernoulli(rate) for every entry of q, k and v."""
    q_shape, k_shape, v_shape = _shapes(case)
    q = _outlier_mixture(q_shape, rate, generator) * case.qk_std
    k = _outlier_mixture(k_shape, rate, generator) * case.qk_std
    v = _outlier_mixture(v_shape, rate, generator)
    return q, k, v


def _outlier_mixture(shape, rate: float, generator) -> torch.Tensor:
    """N(0, 1) + N(0, OUTLIER_STD²)·Bernoulli(rate), entry by entry."""
    base = _normal(shape, generator)
    hit = torch.rand(shape, generator=generator) < rate
    return base + _normal(shape, generator, OUTLIER_STD) * hit


def _clustered(case, clusters: int, generator):
    """Tokens around `clusters` centres per key/value head, which its query heads share."""
    q_shape, k_shape, v_shape = _shapes(case)
    batch, kv_heads, head_dim = case.batch, case.kv_heads, case.head_dim
    centres = _normal((batch, kv_heads, clusters, head_dim), generator)              # (B, Hkv, C, d)
    q_centres = repeat_kv(centres, case.heads)                                        # (B, H, C, d)
    q = _around(q_centres, case.seq_len, generator) * case.qk_std                     # (B, H, N, d)
    k = _around(centres, case.kv_len, generator) * case.qk_std                        # (B, Hkv, M, d)
    v = _normal(v_shape, generator)
    return q, k, v


def _around(centres: torch.Tensor, tokens: int, generator) -> torch.Tensor:
    """(B, h, tokens, d): each token its (uniformly drawn) centre + SPREAD·noise, over √(1 + SPREAD²) for unit variance."""
    batch, heads, clusters, head_dim = centres.shape
    assignment = torch.randint(clusters, (batch, heads, tokens), generator=generator)  # (B, h, T)
    index = assignment[..., None].expand(batch, heads, tokens, head_dim)              # (B, h, T, d)
    own = centres.gather(2, index)                                                     # (B, h, T, d)
    noise = _normal(own.shape, generator)
    return (own + SPREAD * noise) / math.sqrt(1 + SPREAD**2)


def _sinks(case, sinks: int, generator):
    """The first `sinks` keys and every query share one unit direction u per key/value head.

    Content z is iid N(0, qk_std²) with its u component removed, and q = z +
    a·u, k_j = z_j + a·u for j < S, so q·k_j/√d = z·z_j/√d + a²/√d: every sink
    sits a²/√d = log(M/S) + SINK_MARGIN logits above the other keys.
    """
    q_shape, k_shape, v_shape = _shapes(case)
    count = min(sinks, case.kv_len)
    direction = _normal((case.batch, case.kv_heads, 1, case.head_dim), generator)     # (B, Hkv, 1, d)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    q_direction = repeat_kv(direction, case.heads)                                     # (B, H, 1, d)
    margin = math.log(case.kv_len / count) + SINK_MARGIN
    amplitude = math.sqrt(margin * math.sqrt(case.head_dim))                          # a² / √d = margin
    q = _without(_normal(q_shape, generator, case.qk_std), q_direction) + amplitude * q_direction
    k = _without(_normal(k_shape, generator, case.qk_std), direction)                 # (B, Hkv, M, d)
    k[:, :, :count] += amplitude * direction
    v = _normal(v_shape, generator)
    return q, k, v


def _without(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """x with its component along the unit `direction` removed."""
    return x - (x * direction).sum(-1, keepdim=True) * direction


def _local(case, length: int, generator):
    """iid content plus a shared smooth signal of correlation length `length`, rotated by RoPE at each position.

    The signal s(p) (B, Hkv, P, d) is a Gaussian process with correlation
    exp(-(p - p')² / (2 L²)) per entry, weighted onto the RoPE pairs whose
    frequency θ_f is at most about 1/L (those stay nearly in phase over a
    window of L tokens), and scaled so that q_i·k_i/√d averages LOCAL_PEAK.
    """
    q_shape, k_shape, v_shape = _shapes(case)
    n, m, head_dim = case.seq_len, case.kv_len, case.head_dim
    first = min(0, m - n)                                                               # earliest position
    signal = _smooth_signal((case.batch, case.kv_heads, m - first, head_dim), length, generator)  # (B, Hkv, P, d)
    weight = _local_weights(head_dim, length)                                          # (d,)
    gain = math.sqrt(LOCAL_PEAK * math.sqrt(head_dim) / weight.sum())                 # gain²·Σw/√d = peak
    signal = signal * weight.sqrt() * gain
    q_positions = query_positions(n, m)                                                 # (N,)
    k_positions = torch.arange(m)                                                       # (M,)
    q_signal = repeat_kv(signal, case.heads)[:, :, q_positions - first]               # (B, H, N, d)
    k_signal = signal[:, :, k_positions - first]                                       # (B, Hkv, M, d)
    q = _rope(_normal(q_shape, generator, case.qk_std) + q_signal, q_positions)
    k = _rope(_normal(k_shape, generator, case.qk_std) + k_signal, k_positions)
    v = _normal(v_shape, generator)
    return q, k, v


def _smooth_signal(shape, length: int, generator) -> torch.Tensor:
    """Unit-variance Gaussian process along dim -2 with correlation exp(-Δ²/(2 length²)): white noise ⊛ a Gaussian."""
    batch, heads, positions, head_dim = shape
    width = length / math.sqrt(2)                                  # N(·, w²) ⊛ N(·, w²) has variance 2w² = L²
    reach = int(math.ceil(4 * width))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2 * width**2))
    kernel = kernel / kernel.norm()                                # unit variance after the convolution
    noise = _normal((batch * heads * head_dim, 1, positions + 2 * reach), generator)
    smooth = torch.nn.functional.conv1d(noise, kernel.view(1, 1, -1))                 # (B·h·d, 1, P)
    return smooth.view(batch, heads, head_dim, positions).transpose(-1, -2).contiguous()


def _rope_frequencies(head_dim: int) -> torch.Tensor:
    """(d // 2,) θ_f = ROPE_BASE^(-2f/d)."""
    pairs = head_dim // 2
    return ROPE_BASE ** (-2 * torch.arange(pairs, dtype=torch.float64) / head_dim)


def _local_weights(head_dim: int, length: int) -> torch.Tensor:
    """(d,) share of the signal per dim: exp(-(θ_f L)²/2) on both dims of pair f (half-split layout), 1 on an odd last dim."""
    theta = _rope_frequencies(head_dim)
    pair = torch.exp(-(theta * length) ** 2 / 2).float()                               # (d // 2,)
    odd = torch.ones(head_dim % 2)
    return torch.cat([pair, pair, odd])


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE (half-split layout): pair (x_f, x_{f + d/2}) rotated by angle θ_f · position; an odd last dim stays."""
    head_dim = x.shape[-1]
    pairs = head_dim // 2
    angle = positions.double()[:, None] * _rope_frequencies(head_dim)[None, :]       # (T, d // 2)
    cos, sin = angle.cos().float(), angle.sin().float()
    first, second, rest = x[..., :pairs], x[..., pairs:2 * pairs], x[..., 2 * pairs:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos, rest], dim=-1)


DRAWERS = {"iid": _iid, "outliers": _outliers, "clustered": _clustered, "local": _local, "sinks": _sinks}


def sample_rows(case, rows: int = 64) -> torch.Tensor:
    """(R,) sorted query rows, a seeded sample of `rows` (all of them when seq_len <= rows)."""
    generator = torch.Generator().manual_seed(case.seed + 7)
    picked = torch.randperm(case.seq_len, generator=generator)[:rows]
    return picked.sort().values


def exact_weights(case, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, H, R, M) float64 softmax(mod(q kᵀ/√d) + mask) of `rows`, with the case's mask and score mod."""
    return softmax_weights(case, q, k, rows)


@dataclass(frozen=True)
class EntropySummary:
    """Entropy in nats of exact softmax rows: mean and quantiles over the sampled (batch, head, row) triples.

    `uniform` is the mean entropy of a row spread evenly over its visible
    keys (log of their count), `log_kv_len` is log M: how peaked the rows are
    reads as the gap between `mean` and those two.
    """

    mean: float
    q10: float
    median: float
    q90: float
    uniform: float
    log_kv_len: float
    rows: int


def row_entropy_summary(case, rows: int = 64) -> EntropySummary:
    """Entropy of the exact attention rows `draw_qkv(case)` gives, on a seeded sample of `rows` query rows."""
    q, k, _ = draw_qkv(case)
    picked = sample_rows(case, rows)
    weights = exact_weights(case, q, k, picked)                                         # (B, H, R, M)
    plogp = torch.where(weights > 0, weights * weights.log(), torch.zeros_like(weights))
    entropy = -plogp.sum(-1).flatten()                                                  # (B·H·R,)
    visible = _visible_keys(case, picked)                                               # (R,)
    low, middle, high = torch.quantile(entropy, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return EntropySummary(mean=float(entropy.mean()), q10=low, median=middle, q90=high,
                          uniform=float(visible.log().mean()), log_kv_len=math.log(case.kv_len),
                          rows=int(picked.numel()))


def _visible_keys(case, rows: torch.Tensor) -> torch.Tensor:
    """(R,) float64 how many keys each of `rows` may see under the case's mask (at least 1)."""
    allowed = case_mask_matrix(case, rows=rows)                                         # (R, M) or None
    if allowed is None:
        return torch.full((rows.numel(),), float(case.kv_len), dtype=torch.float64)
    return allowed.sum(-1).double().clamp(min=1)


def window_mass(weights: torch.Tensor, case, rows: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, R) share of each row's mass on keys j with |i + M - N - j| <= window."""
    distance = (query_positions(case.seq_len, case.kv_len, rows)[:, None] - torch.arange(case.kv_len)).abs()
    return (weights * (distance <= window)).sum(-1)


def sink_mass(weights: torch.Tensor, sinks: int) -> torch.Tensor:
    """(B, H, R) share of each row's mass on the first `sinks` keys."""
    return weights[..., :sinks].sum(-1)

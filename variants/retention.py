"""Linear attention with a decaying state: RetNet's retention and gated linear attention (GLA).

Both carry S (d_k × d_v) per head and read it with the query (q scaled by 1/√d_k):

    retnet   S_t = γ_h S_{t−1} + k_tᵀ v_t                 o_t = q_t S_t    γ_h = 1 − 2^(−5−h), fixed
    gla      S_t = diag(α_t) S_{t−1} + k_tᵀ v_t           o_t = q_t S_t    α_t ∈ (0, 1)^{d_k}

RetNet's decays are fixed per head (Sun et al. 2023), so it learns no weight
of its own. GLA's gate (Yang et al. 2024) is a learned low-rank projection of
the token, log α_t = logsigmoid(k_t W↓ W↑ + b) / 16, with W↓ (d_k × 16) and
the normaliser 16 of flash-linear-attention's `GatedLinearAttention`.

The float64 reference is the plain recurrence above, one step at a time. The
fast path is chunk-parallel, in chunks of `chunk` steps (see `_recurrent` for
the decode step and the roles of q, k, v):

- retnet: within a chunk the quadratic form (Q Kᵀ ∘ D) V with D_ts = γ^(t−s)
  (s <= t), from the stable segment sum of log γ; between chunks each chunk's
  end state from a zero start, E = (K ∘ γ^(Q−s))ᵀ V, and the state after every
  chunk at once, one matmul with the chunks' decays γ^(Q(t−s)) (γ is one
  number per head), and the entering state's contribution is (Q ∘ γ^t) S_in.
- gla: the same between chunks with the per-channel decays exp(b_t), b the
  cumulative log α within a chunk, every exponent <= 0. Within a chunk the
  decay of a pair, exp(b_t − b_s) per channel, is factored about the middle
  m of a block of steps, q ∘ exp(b − m) and k ∘ exp(m − b), so that the
  scores are one matmul per block. Each factor is at most
  exp(block/2 · max|log α|): the block is the whole chunk while that stays
  below e^`SAFE_EXPONENT` (e^40, far inside float32's e^88), else
  sub-blocks of `SUB` steps (fla's secondary chunking): a query sub-block i
  meets an earlier key sub-block j through the decay r_i accumulated before
  i, q ∘ exp(b − r_i) and k ∘ exp(r_i − b), both at most 1, and the diagonal
  sub-blocks are factored about their middles.

Where autograd records nothing, on the CPU, both run their whole chunked form
in C with one block per chunk (`gated_forward_native`; retnet as GLA with
the constant gates log γ_h, GLA after its gate's projection). Where the
gates are too steep for that, and under autograd, the torch forms above run
(their chain over chunks in C, `chain_native`, where nothing is traced).
"""

from __future__ import annotations

import math

import torch

from attnbench import Case, Knob, LearnedWeight, normal
from attnbench.variants._recurrent import (
    FlaRecurrence,
    Recurrence,
    builds_graph,
    carry_states,
    chunked_view,
    segment_log_decay,
    time_major,
)
from attnbench.variants._recurrent_kernels import (
    chain_native,
    chain_runs_native,
    chunk_lengths,
    gated_forward_native,
    lower_product_terms,
    rows_per_block,
)

SUB = 16
SAFE_EXPONENT = 40.0
GATE_RANK = 16
GATE_NORMALIZER = 16.0
_TAG = 2700


# ---------------------------------------------------------------- retnet

def retnet_log_decays(heads: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """log γ_h for h = 0..H−1, γ_h = 1 − 2^(−5−h) (RetNet's multi-scale decays), (H,)."""
    gammas = [1.0 - 2.0 ** (-5 - h) for h in range(heads)]
    return torch.tensor([math.log(g) for g in gammas], dtype=dtype, device=device)


def retention_sequential(q, k, v, log_gamma, state=None):
    """The plain recurrence S_t = γ S_{t−1} + k_tᵀ v_t, o_t = q_t S_t; q (B, H, N, d_k) aligned at the end of
    k (B, H, M, d_k) and v (B, H, M, d_v). Returns o (B, H, N, d_v) and S_M (B, H, d_k, d_v)."""
    batch, heads, kv_len, key_dim = k.shape
    offset = kv_len - q.shape[2]
    gamma = torch.exp(log_gamma)[:, None, None]                           # (H, 1, 1)
    s = k.new_zeros(batch, heads, key_dim, v.shape[-1]) if state is None else state
    outputs = []
    for t in range(kv_len):
        s = gamma * s + k[:, :, t, :, None] * v[:, :, t, None, :]         # (B, H, d_k, d_v)
        if t >= offset:
            outputs.append((q[:, :, t - offset, None, :] @ s).squeeze(-2))   # q_t S_t (B, H, d_v)
    return torch.stack(outputs, dim=2), s


def retention_decays(log_gamma: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """What retention's chunked form needs of γ, built once (in `prepare`) for chunks of `chunk` steps.

    within (H, Q, Q): γ^(t−s) for s <= t, else 0; to_query (H, Q, 1): γ^(t+1), the entering state's decay
    at step t; to_end (H, Q, 1): γ^(Q−1−s), from step s to the chunk's end.
    """
    steps = torch.arange(chunk, device=log_gamma.device, dtype=log_gamma.dtype)
    g = log_gamma[:, None].expand(-1, chunk)                              # (H, Q)
    return {
        "within": torch.exp(segment_log_decay(g)),
        "to_query": torch.exp(log_gamma[:, None] * (steps + 1))[..., None],
        "to_end": torch.exp(log_gamma[:, None] * (chunk - 1 - steps))[..., None],
    }


def retention_chunked(q, k, v, log_gamma, chunk: int, state=None, decays=None):
    """Retention chunk-parallel: o (B, H, N, d_v) and the final state. q, k (B, H, N, d_k), v (B, H, N, d_v).

    `decays` is `retention_decays(log_gamma, chunk)` (built here when not given). γ is one number per head,
    so under autograd the state after chunk t is one matmul over the chunks, Σ_{s <= t} γ^(Q(t−s)) E_s
    (+ γ^(Q(t+1)) S_0), and no step runs in sequence; where nothing is traced the chain S_j+1 = γ^Q S_j + E_j
    runs in C (`chain_native`), c multiply-adds of d_k·d_v, cheaper than that c × c matmul.
    """
    batch, heads, seq_len, _ = k.shape
    decays = retention_decays(log_gamma, chunk) if decays is None else decays
    qc, kc, vc = (chunked_view(t, chunk) for t in (q, k, v))             # (B, H, c, Q, ·)
    chunks, key_dim, value_dim = qc.shape[2], k.shape[-1], v.shape[-1]
    out = (qc @ kc.transpose(-2, -1)).mul_(decays["within"][:, None]) @ vc   # within chunks (B, H, c, Q, d_v)
    ends = (kc * decays["to_end"][:, None]).transpose(-2, -1) @ vc        # chunk end states (B, H, c, d_k, d_v)
    q_decayed = qc * decays["to_query"][:, None]                          # (B, H, c, Q, d_k)
    if not builds_graph(qc, kc, vc, state) and chain_runs_native(ends):   # S_j+1 = γ^Q S_j + E_j, in C
        first = ends.new_zeros(batch, heads, key_dim, value_dim) if state is None else state
        rows = torch.exp(log_gamma * chunk)[None, :, None, None].expand(batch, heads, chunks, key_dim)
        entering, final = (t.unflatten(0, (batch, heads)) for t in
                           chain_native(rows.flatten(0, 1), ends.flatten(0, 1), first.flatten(0, 1)))
    else:
        index = torch.arange(chunks, device=k.device, dtype=log_gamma.dtype)
        gaps = index[:, None] - index[None, :] - 1                        # t − 1 − s
        carry = torch.exp(log_gamma[:, None, None] * chunk * gaps.clamp_min(0)).masked_fill(gaps < 0, 0.0)  # (H, c, c)
        entering = (carry @ ends.reshape(batch, heads, chunks, key_dim * value_dim)) \
            .view(batch, heads, chunks, key_dim, value_dim)               # S entering chunk t from a zero start
        final = torch.exp(log_gamma * chunk)[:, None, None] * entering[:, :, -1] + ends[:, :, -1]   # after the last
        if state is not None:                                             # S_0 decayed to each chunk's start
            reach = torch.exp(log_gamma[:, None] * chunk * index)[..., None, None]   # (H, c, 1, 1): γ^(Qt)
            out += (q_decayed * reach) @ state[:, :, None]
            final = final + torch.exp(log_gamma * chunk * chunks)[:, None, None] * state
    out += q_decayed @ entering                                           # the entering states' part (B, H, c, Q, d_v)
    padding = chunks * chunk - seq_len                                    # zero steps that only decayed S
    final = final * torch.exp(-log_gamma * padding)[:, None, None] if padding else final
    return out.reshape(batch, heads, chunks * chunk, -1)[:, :, :seq_len], final


def retention_chunked_native(q, k, v, log_gamma, chunk: int, state=None):
    """Retention in C, as GLA with the constant gates log α = log γ_h (`gated_forward_native`): o and the final
    state, or None where γ is too steep for one block per chunk. For inputs autograd does not record, on the
    CPU."""
    gates = log_gamma[:, None].expand(-1, k.shape[-1])                    # (H, d_k)
    return gated_forward_native(None, gates, q, k, v, 1.0, chunk, steepest_for_one_block(chunk), state)


def whole_form_in_c_flops(seq_len: int, chunk: int, dk: int, dv: int, case: Case) -> int:
    """What `gated_forward` in recurrent_kernels.c performs per head: every chunk's full Q × Q scores (2 Q d_k per
    step), their lower triangle times V (`lower_product_terms`), and the entering and end states (2 d_k d_v
    each), the last chunk cut at seq_len."""
    block = rows_per_block(case.element_bytes)
    return sum(count * (2 * rows * chunk * dk + 2 * lower_product_terms(rows, block) * dv + 4 * rows * dk * dv)
               for rows, count in chunk_lengths(seq_len, chunk))


class RetNet(Recurrence):
    name = "retnet"
    family = "retnet"
    in_c = True
    computes = "retention"
    description = "RetNet's retention (fixed decay γ_h = 1 − 2^(−5−h) per head), chunk-parallel"
    # 64 for the torch form (autograd): 13.4 ms against 32's 26.3 ms and 128's 14.1 ms at N = 4096, 8 heads of
    # 64, float32 (2-core machine). The form in C is near either way: 8.3-8.6 ms at 64, 7.4-7.6 ms at 32.
    knobs = {"chunk": Knob(int, default=64, minimum=1, doc="time steps per chunk of the chunk-parallel form")}

    def fixed_weights(self, case: Case, dtype: torch.dtype, device=None) -> dict[str, torch.Tensor]:
        """log γ_h, and the decays of one chunk (`retention_decays`), built once."""
        log_gamma = retnet_log_decays(case.heads, dtype, device)
        decays = retention_decays(log_gamma, self.knob_values(case, "chunk")[0])
        return {"log_gamma": log_gamma, **{f"decay_{name}": t for name, t in decays.items()}}

    def chunked(self, q, k, v, weights, chunk: int, state=None):
        if not builds_graph(q, k, v, state) and chain_runs_native(q, k, v):
            done = retention_chunked_native(q, k, v, weights["log_gamma"], chunk, state)
            if done is not None:
                return done
        decays = {name: weights[f"decay_{name}"] for name in ("within", "to_query", "to_end")}
        return retention_chunked(q, k, v, weights["log_gamma"], chunk, state, decays)

    def sequential(self, q, k, v, weights, state=None):
        return retention_sequential(q, k, v, weights["log_gamma"], state)

    def step_flops(self, case: Case) -> int:
        """Decay the state (1), add k vᵀ (2) and read q S (2) per state element."""
        return 5 * case.head_dim * case.v_head_dim

    def performed_flops(self, case: Case) -> int | None:
        """The chunked form's matmuls (padded to whole chunks): Q Kᵀ and (·) V, the end states, the carry over
        the chunks (c × c by c × d_k·d_v) and the entering state (every chunk's, the first's zero); in C
        (`runs_in_c`) `whole_form_in_c_flops`."""
        chunk, steps = self.padded(case)
        chunks = steps // chunk
        dk, dv = case.head_dim, case.v_head_dim
        if case.kv_len != case.seq_len:
            return None                                                   # the decode step is the recurrence itself
        if self.runs_in_c(case):
            return case.batch * case.heads * whole_form_in_c_flops(case.seq_len, chunk, dk, dv, case)
        carry = 2 * chunks * chunks * dk * dv
        per_head = 2 * steps * chunk * (dk + dv) + 2 * steps * dk * dv + carry + 2 * steps * dk * dv
        return case.batch * case.heads * per_head

    def memory_model(self, case: Case) -> int:
        chunk, steps, chunks, element = self.work_shape(case)
        dk, dv = case.head_dim, case.v_head_dim
        upcast = 3 * steps * dk if element != case.element_bytes else 0
        if self.runs_in_c(case):                                          # scaled q, o, the final state
            return case.batch * case.heads * element * (case.seq_len * (dk + dv) + dk * dv + upcast)
        per_head = (3 * steps * chunk                                     # scores, decayed, the decay matrix
                    + 3 * steps * dv                                      # intra out, inter out, their sum
                    + steps * dk * 2                                      # scaled q, the decayed k / q
                    + 2 * chunks * dk * dv                                # end states, entering states
                    + upcast)
        return case.batch * case.heads * element * per_head


# ---------------------------------------------------------------- gla

def gla_learned_weights(case: Case) -> dict[str, LearnedWeight]:
    """GLA's gate projection per head: W↓ (H, d_k, r), W↑ (H, r, d_k) and the bias b (H, 1, d_k)."""
    heads, key_dim = case.heads, case.head_dim
    return {
        "gate_down": LearnedWeight((heads, key_dim, GATE_RANK), normal(key_dim ** -0.5), doc="W↓ of the gate"),
        "gate_up": LearnedWeight((heads, GATE_RANK, key_dim), normal(GATE_RANK ** -0.5), doc="W↑ of the gate"),
        "gate_bias": LearnedWeight((heads, 1, key_dim), normal(0.5), decay=False, doc="the gate's bias b"),
    }


def gla_log_gates(k, weights) -> torch.Tensor:
    """log α_t = logsigmoid(k_t W↓ W↑ + b) / 16, (B, H, N, d_k), every entry < 0."""
    logits = ((k @ weights["gate_down"]) @ weights["gate_up"]).add_(weights["gate_bias"])   # (B, H, N, d_k)
    return torch.nn.functional.logsigmoid(logits).div_(GATE_NORMALIZER)


def gla_sequential(q, k, v, g, state=None):
    """The plain recurrence S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t, o_t = q_t S_t; q aligned at the end of k, v.
    g (B, H, M, d_k) are the log gates. Returns o (B, H, N, d_v) and S_M (B, H, d_k, d_v)."""
    batch, heads, kv_len, key_dim = k.shape
    offset = kv_len - q.shape[2]
    s = k.new_zeros(batch, heads, key_dim, v.shape[-1]) if state is None else state
    outputs = []
    for t in range(kv_len):
        s = torch.exp(g[:, :, t, :, None]) * s + k[:, :, t, :, None] * v[:, :, t, None, :]
        if t >= offset:
            outputs.append((q[:, :, t - offset, None, :] @ s).squeeze(-2))
    return torch.stack(outputs, dim=2), s


def gla_chunked(q, k, v, g, chunk: int, state=None):
    """GLA chunk-parallel, with `SUB`-step sub-blocks inside each chunk when its gates are steep: o (B, H, N, d_v)
    and the final state.

    With one block per chunk, the factors about its middle m serve every term: q_t e^(b_t−m) and k_s e^(m−b_s)
    give the scores, and times e^m and e^(b_end−m) (both <= 1) the entering state's decay e^(b_t) and the decay
    to the chunk's end e^(b_end−b_s).
    """
    qc, kc, vc, gc = (chunked_view(t, chunk) for t in (q, k, v, g))      # (B, H, c, Q, ·); padding: g = 0
    b = gc.cumsum(dim=3)                                                  # log decay since the chunk began
    b_end = b[:, :, :, -1:]                                               # (B, H, c, 1, d_k)
    if one_block_per_chunk(gc, chunk):
        middle = b[:, :, :, chunk // 2: chunk // 2 + 1]                  # m (B, H, c, 1, d_k)
        to_middle = (b - middle).exp_()                                   # e^(b_t − m), at most e^SAFE_EXPONENT
        q_mid, k_mid = qc * to_middle, kc / to_middle                     # (B, H, c, Q, d_k)
        scores = one_block_scores(q_mid, k_mid)                           # (B, H, c, Q, Q)
        rescale = torch.mul if builds_graph(q_mid, k_mid) else torch.Tensor.mul_   # in place where nothing is traced
        q_start, k_end = rescale(q_mid, torch.exp(middle)), rescale(k_mid, torch.exp(b_end - middle))
    else:
        scores = gla_scores_within(qc, kc, b, gc)
        q_start, k_end = qc * torch.exp(b), kc * torch.exp(b_end - b)
    return gla_outputs(q_start, k_end, scores, vc, torch.exp(b_end).transpose(-2, -1), state, k.shape[2])


def gla_chunked_native(q, k, v, weights, chunk: int, state=None):
    """`gla_chunked` in C after the gate's low-rank projection (`gated_forward_native`): o and the final state, or
    None where the gates are too steep for one block per chunk (then `gla_chunked`'s sub-blocks run). For
    inputs autograd does not record, on the CPU."""
    logits = (k @ weights["gate_down"]) @ weights["gate_up"]            # (B, H, N, d_k), the bias is added in C
    return gated_forward_native(logits, weights["gate_bias"], q, k, v, GATE_NORMALIZER, chunk,
                                steepest_for_one_block(chunk), state)


def one_block_scores(q_mid: torch.Tensor, k_mid: torch.Tensor) -> torch.Tensor:
    """A_ts = (q_t ∘ e^(b_t − m)) · (k_s ∘ e^(m − b_s)) for s <= t within each chunk, else 0: (B, H, c, Q, Q)."""
    chunk = q_mid.shape[-2]
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q_mid.device).tril()
    return (q_mid @ k_mid.transpose(-2, -1)).masked_fill_(~lower, 0.0)


def gla_outputs(q_start, k_end, scores, vc, chunk_decay, state, seq_len: int):
    """o (B, H, N, d_v) and the final state from a chunked form's factors: every chunk's end state
    (K ∘ e^(b_end − b))ᵀ V, the states entering the chunks (`carry_states`, chunk_decay (B, H, c, d_k, 1) =
    e^(b_end)), and o = (Q ∘ e^b) S_in + scores V, cut back to seq_len."""
    ends = k_end.transpose(-2, -1) @ vc                                   # (B, H, c, d_k, d_v)
    starts, final = carry_states(chunk_decay, ends, state)
    out = (q_start @ starts).add_(scores @ vc)                            # (B, H, c, Q, d_v)
    batch, heads, chunks, chunk, value_dim = out.shape
    return out.reshape(batch, heads, chunks * chunk, value_dim)[:, :, :seq_len], final


def one_block_per_chunk(gc: torch.Tensor, chunk: int) -> bool:
    """Whether the chunk is one block: its factors stay below e^SAFE_EXPONENT (or it cannot be cut into `SUB`s)."""
    return (float(-gc.detach().min()) if gc.numel() else 0.0) <= steepest_for_one_block(chunk)


def steepest_for_one_block(chunk: int) -> float:
    """The largest |log α| of one step for which chunks of `chunk` steps can be one block: a factor reaches
    e^(chunk/2 · |log α|); any, where the chunk cannot be cut into `SUB`s."""
    return 2 * SAFE_EXPONENT / chunk if chunk % SUB == 0 else math.inf


def gla_scores_within(qc, kc, b, gc) -> torch.Tensor:
    """A_ts = Σ_i q_ti k_si exp(b_ti − b_si) for s <= t within each chunk, else 0: (B, H, c, Q, Q).

    qc, kc, b, gc (B, H, c, Q, d_k); b the cumulative log gates from the chunk's start. For chunks whose
    gates are too steep to be one block (`one_block_per_chunk` is False, so Q is a multiple of `SUB`): the
    chunk is cut into sub-blocks of `SUB` steps.
    """
    batch, heads, chunks, chunk, key_dim = kc.shape
    sub = SUB
    blocks = chunk // sub
    shape = (batch, heads, chunks, blocks, sub, key_dim)
    qs, ks, bs, gs = (t.reshape(shape) for t in (qc, kc, b, gc))         # (B, H, c, n, L, d_k)
    middle = bs[..., sub // 2: sub // 2 + 1, :]                           # m_i: the decay at sub-block i's middle
    lower = torch.ones(sub, sub, dtype=torch.bool, device=kc.device).tril()
    diagonal = ((qs * torch.exp(bs - middle)) @ (ks * torch.exp(middle - bs)).transpose(-2, -1)) \
        .masked_fill_(~lower, 0.0)                                        # (B, H, c, n, L, L)
    if blocks == 1:                                                       # the chunk is one sub-block
        return diagonal[:, :, :, 0]
    before = bs[..., :1, :] - gs[..., :1, :]                              # r_i: decay before sub-block i
    q_rel = qs * torch.exp(bs - before)                                   # (B, H, c, n, L, d_k), factors <= 1
    earlier = torch.ones(blocks, blocks, dtype=torch.bool, device=kc.device).tril(-1)[:, :, None, None]
    exponent = (before[:, :, :, :, None] - bs[:, :, :, None]).masked_fill(~earlier, float("-inf"))   # (.., n, n, L, d_k)
    across = q_rel[:, :, :, :, None] @ (ks[:, :, :, None] * torch.exp(exponent)).transpose(-2, -1)  # (.., n, n, L, L)
    same = torch.eye(blocks, dtype=torch.bool, device=kc.device)[:, :, None, None]
    scores = torch.where(same, diagonal[:, :, :, :, None], across)        # (B, H, c, n_i, n_j, L, L)
    return scores.transpose(4, 5).reshape(batch, heads, chunks, chunk, chunk)


class GatedLinearAttention(Recurrence):
    name = "gla"
    family = "gla"
    in_c = True
    computes = "gated_linear_attention"
    # 32: the form in C took 11.5-16.2 ms against 64's 11.5-12.7 ms at N = 4096, 8 heads of 64, float32, two
    # alternating runs (2-core machine), and 64's factors reach twice as far; one block per chunk for the
    # seeded gates
    knobs = {"chunk": Knob(int, default=32, minimum=1, doc="time steps per chunk of the chunk-parallel form")}
    description = "gated linear attention (Yang et al. 2024): per-channel learned decays, chunk-parallel with sub-blocks"

    def learned_weights(self, case: Case) -> dict[str, LearnedWeight]:
        return gla_learned_weights(case)

    def chunked(self, q, k, v, weights, chunk: int, state=None):
        if not builds_graph(q, k, v, state, *weights.values()) and chain_runs_native(q, k, v):
            done = gla_chunked_native(q, k, v, weights, chunk, state)
            if done is not None:
                return done
        return gla_chunked(q, k, v, gla_log_gates(k, weights), chunk, state)

    def sequential(self, q, k, v, weights, state=None):
        return gla_sequential(q, k, v, gla_log_gates(k, weights), state)

    def step_flops(self, case: Case) -> int:
        """Decay the state (1), add k vᵀ (2) and read q S (2) per state element."""
        return 5 * case.head_dim * case.v_head_dim

    def projection_flops(self, case: Case) -> int:
        """The gate's k W↓ W↑."""
        return 4 * case.head_dim * GATE_RANK

    def performed_flops(self, case: Case) -> int | None:
        """The chunked form's matmuls, padded to whole chunks: gate projection, end states, entering state,
        the scores and the scores times V, for gates gentle enough for one block per chunk (the seeded ones;
        steeper gates run sub-blocks, see `gla_scores_within`); in C (`runs_in_c`) the gate projection and
        `whole_form_in_c_flops`."""
        chunk = self.knob_values(case, "chunk")[0]
        dk, dv = case.head_dim, case.v_head_dim
        if case.kv_len != case.seq_len:
            return None                                                   # the decode step is the recurrence itself
        if self.runs_in_c(case):
            per_head = 4 * case.seq_len * dk * GATE_RANK + whole_form_in_c_flops(case.seq_len, chunk, dk, dv, case)
            return case.batch * case.heads * per_head
        steps = -(-case.seq_len // chunk) * chunk
        sub, blocks = chunk, 1                                            # the seeded gates' one block per chunk
        per_head = (4 * case.seq_len * dk * GATE_RANK                     # the gate projection
                    + 4 * steps * dk * dv                                 # end states, entering state
                    + 2 * steps * sub * dk                                # diagonal sub-blocks
                    + (2 * steps * blocks * sub * dk if blocks > 1 else 0)   # cross sub-blocks (all n × n)
                    + 2 * steps * chunk * dv)                             # scores @ V
        return case.batch * case.heads * per_head

    def memory_model(self, case: Case) -> int:
        chunk = self.knob_values(case, "chunk")[0]
        steps = -(-case.seq_len // chunk) * chunk
        chunks = steps // chunk
        blocks = 1                                                        # the seeded gates' one block per chunk
        dk, dv = case.head_dim, case.v_head_dim
        element = 4 if case.dtype in ("float16", "bfloat16") else case.element_bytes
        if self.runs_in_c(case):                                          # k W↓, logits, scaled q, o, final state
            tokens = case.seq_len * (GATE_RANK + 2 * dk + dv)
            return case.batch * case.heads * element * (tokens + dk * dv)
        per_head = (steps * GATE_RANK + 3 * steps * dk                    # gate projection, logits, log gates
                    + 8 * steps * dk                                      # cumsum, exps, scaled q/k copies
                    + 3 * steps * blocks * dk                             # cross exponents and scaled keys
                    + 4 * steps * chunk                                   # cross and diagonal scores, assembled
                    + 3 * steps * dv                                      # outputs
                    + 2 * chunks * dk * dv)                               # end and entering states
        return case.batch * case.heads * element * per_head


# ---------------------------------------------------------------- flash-linear-attention's kernels (extra "fla")

def retention_fla_arguments(q, k, v, weights) -> dict:
    """`fla.ops.retention.chunk_retention`'s arguments: (B, T, H, ·) views and our scale; fla derives the same
    γ_h = 1 − 2^(−5−h) from the head count."""
    return {"q": time_major(q), "k": time_major(k), "v": time_major(v), "scale": q.shape[-1] ** -0.5}


def gla_fla_arguments(q, k, v, weights) -> dict:
    """`fla.ops.gla.chunk_gla`'s arguments: (B, T, H, ·) views, g our log α (B, T, H, K), our scale."""
    return {**retention_fla_arguments(q, k, v, weights), "g": time_major(gla_log_gates(k, weights))}


class FlaRetNet(FlaRecurrence, RetNet):
    name = "fla-retnet"
    description = "flash-linear-attention's chunk_retention (Triton, CUDA): retnet's function"
    kernel_path = "fla.ops.retention:chunk_retention"
    fla_arguments = staticmethod(retention_fla_arguments)


class FlaGLA(FlaRecurrence, GatedLinearAttention):
    name = "fla-gla"
    description = "flash-linear-attention's chunk_gla (Triton, CUDA): gla's function"
    kernel_path = "fla.ops.gla:chunk_gla"
    fla_arguments = staticmethod(gla_fla_arguments)

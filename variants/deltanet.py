"""The delta rule: DeltaNet and Gated DeltaNet, linear attention that overwrites what it stores.

With q and k L2-normalised per head (q then scaled by 1/√d_k), S (d_k × d_v):

    deltanet        S_t = (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t          o_t = q_t S_t
    gated-deltanet  S_t = α_t (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t

S_{t−1} first forgets what it returns for k_t (a step of the delta rule's
online regression, β_t its learning rate), then stores v_t there. β_t =
σ(k_t·w_β + b_β) per head (Schlag et al. 2021; Yang et al. 2024). Gated
DeltaNet (Yang, Kautz, Hatamizadeh 2024) adds a scalar decay per head,
α_t = exp(−exp(A_log)·softplus(k_t·w_α + b_Δ)), Mamba-2's parametrisation
(A in [1, 16], Δ's bias for Δ in [1e-3, 1e-1]). w_β, b_β, w_α, A_log and b_Δ
are the learned weights; the raw k (before normalising) feeds them.

The float64 reference is the recurrence above, one step at a time. The fast
path is chunk-parallel (DeltaNet's WY/UT form): with u_t = β_t(v_t − k_t α_t S_{t−1})
the pseudo-values, S_t = Γ_t S_0 + Σ_{s<=t} Γ_ts k_sᵀ u_s (Γ the decays inside
the chunk, exp of a segment sum; 1 for DeltaNet), so within a chunk of Q steps

    (I + tril₋₁(diag(β) (K Kᵀ ∘ Γ))) U' = diag(β)(V − diag(Γ_t) K S_0)

is one unit lower-triangular solve per chunk, T = (I + L)⁻¹ diag(β), done for
every chunk at once: W = T diag(Γ_t) K, U = T V. The state entering each
chunk follows S ← Γ_Q S + K̃ᵀ(U − W S), K̃ = K ∘ Γ_Q,s: only that chain is
sequential, and o = diag(Γ_t) Q S + (Q Kᵀ ∘ Γ)₊ U' (lower, with the
diagonal) with U' = U − W S.

Where autograd records nothing, on the CPU, the whole form runs in C
(`delta_forward_native`), each sequence·head's chunks in turn on one thread:
T by substitution, U' = T (V − diag(Γ_t) K S) (one product with S where W S
needs W first), o, and S ← Γ_Q S + K̃ᵀ U'. Elsewhere it runs in torch, the
chain as S ← A S + B, one matmul per chunk, with every chunk's A = Γ_Q I −
K̃ᵀ W and B = K̃ᵀ U made at once, and o computed as (diag(Γ_t) Q − (Q Kᵀ ∘ Γ)₊
W) S + (Q Kᵀ ∘ Γ)₊ U.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from attnbench import Case, Knob, LearnedWeight, constant, log_uniform, normal, uniform
from attnbench.variants._recurrent import (
    FlaRecurrence,
    Recurrence,
    builds_graph,
    chunked_view,
    segment_log_decay,
    time_major,
)
from attnbench.variants._recurrent_kernels import (
    chain_runs_native,
    chunk_lengths,
    delta_forward_native,
    lower_product_terms,
    rows_per_block,
)


def inverse_softplus_of(initial):
    """softplus⁻¹ of another initialiser's draws (a bias whose softplus starts at those values)."""
    def draw(generator, shape):
        value = initial(generator, shape)
        return value + torch.log(-torch.expm1(-value))
    return draw


def beta_learned_weights(case: Case) -> dict[str, LearnedWeight]:
    """β's projection per head: w_β (H, d_k, 1) and b_β (H, 1, 1)."""
    return {
        "beta_proj": LearnedWeight((case.heads, case.head_dim, 1), normal(case.head_dim ** -0.5), doc="w_β"),
        "beta_bias": LearnedWeight((case.heads, 1, 1), constant(0.0), decay=False, doc="b_β"),
    }


def decay_learned_weights(case: Case) -> dict[str, LearnedWeight]:
    """α's weights per head, Mamba-2's: w_α (H, d_k, 1), A_log (H, 1, 1) with A in [1, 16], b_Δ (H, 1, 1)."""
    return {
        "decay_proj": LearnedWeight((case.heads, case.head_dim, 1), normal(case.head_dim ** -0.5), doc="w_α"),
        "A_log": LearnedWeight((case.heads, 1, 1), uniform(0.0, math.log(16.0)), decay=False, doc="log A"),
        "dt_bias": LearnedWeight((case.heads, 1, 1), inverse_softplus_of(log_uniform(1e-3, 1e-1)), decay=False,
                                 doc="Δ's bias, softplus(b_Δ) in [1e-3, 1e-1]"),
    }


def betas(k, weights) -> torch.Tensor:
    """β_t = σ(k_t·w_β + b_β), (B, H, N)."""
    return torch.sigmoid(k @ weights["beta_proj"] + weights["beta_bias"]).squeeze(-1)


def log_decays(k, weights) -> torch.Tensor:
    """log α_t = −exp(A_log)·softplus(k_t·w_α + b_Δ), (B, H, N), every entry < 0."""
    delta = torch.nn.functional.softplus(k @ weights["decay_proj"] + weights["dt_bias"])   # (B, H, N, 1)
    return (-torch.exp(weights["A_log"]) * delta).squeeze(-1)


def normalised(x: torch.Tensor) -> torch.Tensor:
    """x / ‖x‖ along the last dimension (L2 normalisation of q and k)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def delta_rule_sequential(q, k, v, beta, log_alpha=None, state=None):
    """The plain recurrence S_t = α_t (S_{t−1} − β_t k_tᵀ (k_t S_{t−1})) + β_t k_tᵀ v_t, o_t = q_t S_t.

    q (B, H, N, d_k) aligned at the end of k (B, H, M, d_k) and v (B, H, M, d_v);
    beta, log_alpha (B, H, M) (log_alpha None: α = 1). Returns o (B, H, N, d_v) and S_M.
    """
    batch, heads, kv_len, key_dim = k.shape
    offset = kv_len - q.shape[2]
    s = k.new_zeros(batch, heads, key_dim, v.shape[-1]) if state is None else state
    outputs = []
    for t in range(kv_len):
        k_t = k[:, :, t, None, :]                                         # (B, H, 1, d_k)
        b_t = beta[:, :, t, None, None]                                   # (B, H, 1, 1)
        s = s - b_t * k_t.transpose(-2, -1) @ (k_t @ s)                   # (I − β kᵀk) S
        if log_alpha is not None:
            s = torch.exp(log_alpha[:, :, t, None, None]) * s
        s = s + b_t * k_t.transpose(-2, -1) @ v[:, :, t, None, :]         # + β kᵀ v
        if t >= offset:
            outputs.append((q[:, :, t - offset, None, :] @ s).squeeze(-2))   # (B, H, d_v)
    return torch.stack(outputs, dim=2), s


def delta_rule_chunked(q, k, v, beta, log_alpha, chunk: int, state=None):
    """The delta rule chunk-parallel (WY/UT form): o (B, H, N, d_v) and the final state.

    q, k (B, H, N, d_k), v (B, H, N, d_v), beta and log_alpha (B, H, N) (log_alpha None: no decay).
    Padding steps have k = v = 0 and β = 0, log α = 0: they change nothing. Where autograd records nothing,
    on the CPU, the whole form runs in C (`delta_forward_native`).
    """
    if not builds_graph(q, k, v, beta, log_alpha, state) and chain_runs_native(q, k, v):
        return delta_forward_native(q, k, v, beta, log_alpha, chunk, state)
    batch, heads, seq_len, key_dim = k.shape
    qc, kc, vc = (chunked_view(t, chunk) for t in (q, k, v))             # (B, H, c, Q, ·)
    bc = chunked_view(beta[..., None], chunk)                            # (B, H, c, Q, 1)
    chunks = qc.shape[2]
    if log_alpha is None:
        gamma = torch.ones(chunk, chunk, dtype=k.dtype, device=k.device).tril()   # Γ_ts = 1 (s <= t)
        to_now = to_end = end_decay = None
    else:
        g = chunked_view(log_alpha[..., None], chunk)[..., 0]             # (B, H, c, Q)
        b = g.cumsum(dim=-1)
        gamma = torch.exp(segment_log_decay(g))                          # Γ_ts = α_{s+1}···α_t, (B, H, c, Q, Q)
        to_now = torch.exp(b)[..., None]                                  # Γ_t from the chunk's start, (B, H, c, Q, 1)
        to_end = torch.exp(b[..., -1:] - b)[..., None]                    # from s to the chunk's end
        end_decay = torch.exp(b[..., -1])[..., None, None]                # (B, H, c, 1, 1)
    # the UT transform, every chunk at once: T = (I + L)⁻¹ diag(β), L = tril₋₁(diag(β)(K Kᵀ ∘ Γ)); the unit
    # lower-triangular solve reads only L's strictly lower triangle, so the rest of the product stays as it is
    lower = kc @ kc.transpose(-2, -1)                                     # (B, H, c, Q, Q)
    lower = (lower if to_now is None else lower.mul_(gamma)).mul_(bc)
    eye = torch.eye(chunk, dtype=k.dtype, device=k.device)
    t_mat = torch.linalg.solve_triangular(lower, eye * bc.transpose(-2, -1), upper=False,
                                          unitriangular=True)            # (B, H, c, Q, Q)
    k_in = kc if to_now is None else kc * to_now                          # K Γ_t (B, H, c, Q, d_k)
    scores = (qc @ kc.transpose(-2, -1)).mul_(gamma)                      # (B, H, c, Q, Q), lower with diagonal
    q_in = qc if to_now is None else qc * to_now
    first = k.new_zeros(batch, heads, key_dim, v.shape[-1]) if state is None else state
    u, w = t_mat @ vc, t_mat @ k_in                                       # (B, H, c, Q, d_v), (B, H, c, Q, d_k)
    k_out = kc if to_end is None else kc * to_end                         # K̃ (B, H, c, Q, d_k)
    starts, final = delta_rule_states(w, u, k_out, end_decay, first)
    out = ((scores @ w).neg_().add_(q_in) @ starts).add_(scores @ u)      # (Q − s W) S + s U, U' = U − W S
    out = out.reshape(batch, heads, chunks * chunk, -1)
    return out[:, :, :seq_len], final.reshape(batch, heads, key_dim, -1)


def delta_rule_states(w, u, k_out, end_decay, first):
    """The states entering every chunk (B, H, c, d_k, d_v) and the last, in torch: the chain S_j+1 = A_j S_j + B_j
    with every chunk's A_j = Γ_Q I − K̃ᵀ W and B_j = K̃ᵀ U made at once (one batched matmul per chunk in sequence).

    w, k_out (B, H, c, Q, d_k), u (B, H, c, Q, d_v), end_decay (B, H, c, 1, 1) or None, first (B, H, d_k, d_v).
    """
    batch, heads, chunks = w.shape[:3]
    k_out_t = k_out.transpose(-2, -1)                                     # (B, H, c, d_k, Q)
    a = (k_out_t @ w).neg_()                                              # −K̃ᵀ W (B, H, c, d_k, d_k)
    a.diagonal(dim1=-2, dim2=-1).add_(1.0 if end_decay is None else end_decay[..., 0])   # + Γ_Q I
    b = k_out_t @ u                                                       # (B, H, c, d_k, d_v)
    a, b, first = a.flatten(0, 1), b.flatten(0, 1), first.flatten(0, 1)   # (B·H, c, d_k, ·)
    if builds_graph(a, b, first):
        steps = [first]
        for j in range(chunks):                                           # one step per chunk
            steps.append(torch.baddbmm(b[:, j], a[:, j], steps[-1]))
        starts, final = torch.stack(steps[:-1], dim=1), steps[-1]          # (B·H, c, d_k, d_v)
    else:                                                                 # each step written in place
        starts = b.new_empty(b.shape)                                     # S entering chunk j
        starts[:, 0].copy_(first)
        for j in range(chunks - 1):
            torch.baddbmm(b[:, j], a[:, j], starts[:, j], out=starts[:, j + 1])
        final = torch.baddbmm(b[:, -1], a[:, -1], starts[:, -1])
    return starts.unflatten(0, (batch, heads)), final.unflatten(0, (batch, heads))


def delta_form_in_c_flops(seq_len: int, chunk: int, dk: int, dv: int, case: Case) -> int:
    """What `delta_forward` in recurrent_kernels.c performs per head, chunk by chunk (the last cut at seq_len):
    K Kᵀ and Q Kᵀ (rows × Q from d_k each), T by substitution (row t subtracts t earlier rows of up to t
    entries), Γ K S and Γ Q S (2 d_k d_v per step each), T and the scores times a Q × d_v matrix
    (`lower_product_terms`), and K̃ᵀ U' into S (2 d_k d_v per step)."""
    block = rows_per_block(case.element_bytes)
    total = 0
    for rows, count in chunk_lengths(seq_len, chunk):
        substitution = (rows - 1) * rows * (rows + 1) // 3
        total += count * (4 * rows * chunk * dk + substitution + 6 * rows * dk * dv
                          + 4 * lower_product_terms(rows, block) * dv)
    return total


class _DeltaRule(Recurrence):
    family = "deltanet"
    gated = False
    in_c = True
    # 32: the form in C took 14.3-19.0 ms (deltanet) and 16.7-19.4 ms (gated) against 16's 23.6-27.3 and 64's
    # 23.3-24.2 at N = 4096, 8 heads of 64, float32 (2-core machine): at 16 the state's products, whose
    # inner dimension is the chunk, are too short for their register tiles
    knobs = {"chunk": Knob(int, default=32, minimum=1, doc="time steps per chunk of the chunk-parallel form")}

    def prepared_inputs(self, q, k):
        """q and k L2-normalised per head, q then scaled by 1/√d_k; the raw k is kept for the gates."""
        return normalised(q) * q.shape[-1] ** -0.5, k

    def learned_weights(self, case: Case) -> dict[str, LearnedWeight]:
        return {**beta_learned_weights(case), **(decay_learned_weights(case) if self.gated else {})}

    def _gates(self, k, weights):
        return betas(k, weights), log_decays(k, weights) if self.gated else None

    def chunked(self, q, k, v, weights, chunk: int, state=None):
        beta, log_alpha = self._gates(k, weights)
        return delta_rule_chunked(q, normalised(k), v, beta, log_alpha, chunk, state)

    def sequential(self, q, k, v, weights, state=None):
        beta, log_alpha = self._gates(k, weights)
        return delta_rule_sequential(q, normalised(k), v, beta, log_alpha, state)

    def step_flops(self, case: Case) -> int:
        """k S (2), β kᵀ(·) subtracted (2), β kᵀ v added (2), q S (2) per state element (gated: α S, 1 more)."""
        return (9 if self.gated else 8) * case.head_dim * case.v_head_dim

    def projection_flops(self, case: Case) -> int:
        """Normalising q and k (3·d_k each) and the gate projections k·w (2·d_k each)."""
        return 6 * case.head_dim + 2 * case.head_dim * (2 if self.gated else 1)

    def performed_flops(self, case: Case) -> int | None:
        """The chunked form's matmuls and triangular solve, padded to whole chunks (the solve: Q²·Q per chunk,
        which FlopCounterMode does not see); in C (`runs_in_c`) the gate projections and
        `delta_form_in_c_flops`."""
        chunk, steps = self.padded(case)
        dk, dv = case.head_dim, case.v_head_dim
        projections = 2 * dk * (2 if self.gated else 1)
        if case.kv_len != case.seq_len:
            return None                                                   # the decode step is the recurrence itself
        if self.runs_in_c(case):
            per_head = case.seq_len * projections + delta_form_in_c_flops(case.seq_len, chunk, dk, dv, case)
            return case.batch * case.heads * per_head
        shared = (case.seq_len * projections
                  + 2 * steps * chunk * dk * 2                            # K Kᵀ and Q Kᵀ
                  + steps * chunk * chunk                                 # the triangular solve
                  + 2 * steps * chunk * (dv + dk)                         # U = T V, W = T K
                  + 2 * steps * dk * dv                                   # Γ Q S (or (Γ Q − scores W) S)
                  + 2 * steps * chunk * dv)                               # scores U (or scores U')
        chain = (2 * steps * dk * (dk + dv)                               # every chunk's A = Γ I − K̃ᵀ W, B = K̃ᵀ U
                 + 2 * (steps // chunk) * dk * dk * dv                    # the chain A S
                 + 2 * steps * chunk * dk)                                # scores W
        return case.batch * case.heads * (shared + chain)

    def memory_model(self, case: Case) -> int:
        chunk, steps, chunks, element = self.work_shape(case)
        dk, dv = case.head_dim, case.v_head_dim
        if self.runs_in_c(case):                                          # normalised q, k, scaled q, β, α, o, S
            return case.batch * case.heads * element * (case.seq_len * (3 * dk + dv + 2) + dk * dv)
        per_head = (6 * steps * dk                                        # normalised q, k, scaled copies, W
                    + 5 * steps * chunk                                   # K Kᵀ, L, T, Q Kᵀ, Γ
                    + 4 * steps * dv                                      # U, U', the outputs and their stack
                    + 3 * steps + chunks * dk * dv)
        return case.batch * case.heads * element * per_head


class DeltaNet(_DeltaRule):
    name = "deltanet"
    computes = "delta_rule"
    description = "DeltaNet's delta rule (learned β, L2-normalised q, k), chunk-parallel in the WY/UT form"


class GatedDeltaNet(_DeltaRule):
    name = "gated-deltanet"
    computes = "gated_delta_rule"
    description = "Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024): the delta rule with a learned scalar decay per head"
    gated = True


# ---------------------------------------------------------------- flash-linear-attention's kernels (extra "fla")

def delta_rule_fla_arguments(q, k, v, weights, gated: bool) -> dict:
    """`chunk_delta_rule` / `chunk_gated_delta_rule`'s arguments: q, k L2-normalised, (B, T, H, ·) views, beta
    (B, T, H), our scale, and for the gated rule g = our log α (B, T, H)."""
    arguments = {"q": time_major(normalised(q)), "k": time_major(normalised(k)), "v": time_major(v),
                 "beta": betas(k, weights).transpose(1, 2), "scale": q.shape[-1] ** -0.5}
    if gated:
        arguments["g"] = log_decays(k, weights).transpose(1, 2)
    return arguments


class FlaDeltaNet(FlaRecurrence, DeltaNet):
    name = "fla-deltanet"
    description = "flash-linear-attention's chunk_delta_rule (Triton, CUDA): deltanet's function"
    kernel_path = "fla.ops.delta_rule:chunk_delta_rule"
    fla_arguments = staticmethod(partial(delta_rule_fla_arguments, gated=False))


class FlaGatedDeltaNet(FlaRecurrence, GatedDeltaNet):
    name = "fla-gated-deltanet"
    description = "flash-linear-attention's chunk_gated_delta_rule (Triton, CUDA): gated-deltanet's function"
    kernel_path = "fla.ops.gated_delta_rule:chunk_gated_delta_rule"
    fla_arguments = staticmethod(partial(delta_rule_fla_arguments, gated=True))

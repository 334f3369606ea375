"""Selective state-space layers (Mamba, Mamba-2) as stand-ins for attention.

Both are sequence maps with a recurrent state, causal by nature: output t
depends on inputs 0..t only. The case's `causal` flag therefore changes
nothing; both values are accepted and give the same function (a non-causal
SSM would need a second, reversed scan, which is another layer). Self-attention
shapes only (kv_len == seq_len). The layer is the selective state-space core
with its selection weights and the D skip; the input and output projections
are the case's q, k, v roles (in a quality cell, the model's trained q, k, v
and output projections), and the short causal convolution lives in the
quality model's block, in front of every mixer alike (`attnbench.tasks.model`).

The selection weights are *learned weights* (`Variant.learned_weights`): a
kernel cell seeds them from the case, as Mamba initialises them; a quality
cell trains them with the model, with no weight decay on Δ's bias, A_log and
D (as Mamba). A = −exp(A_log) stays negative whatever A_log becomes.

**mamba-scan** (Mamba-1's selective scan, Gu & Dao 2023). The case maps onto
the layer's inner width D = heads·head_dim: x = v, and the "attention" roles
of q and k become the selection inputs, as in the SSM/attention duality
(C ↔ q, B ↔ k):

    x_t = v[:, :, t, :] flattened to (B, D)        Δ_t = softplus(x_t W↓ W↑ + b)   (B, D)
    B_t = k_t W_B  (B, n)                          C_t = q_t W_C  (B, n)
    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t   (B, D, n)
    y_t = h_t C_t + D ⊙ x_t                        (B, D)

with A = −exp(A_log), the zero-order hold for A and Euler for B. Learned
weights, initialised as Mamba does: W↓ (D × ⌈D/16⌉) N(0, 1/D), W↑
U(±r^−½), b = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [1e-3, 1e-1] (floored
at 1e-4), W_B and W_C (D × n) N(0, 1/D), A_log = log(j+1) (S4D-real,
A_{·,j} = −(j+1)) and D = 1. The output y is put back as (B, H, N, head_dim).
The fast path (`attnbench.variants._selective_scan`) is, on the CPU, a C
scan built once per machine (`selective_scan.c`): one pass over time per
block of 16 channels, each block's (16, n) state in L1, reading x from v and
writing y + D ⊙ x in (B, H, N, d) directly; under autograd its C backward
runs time in reverse from states kept every 16 steps. Elsewhere, or without
a C compiler, it runs blocks of `chunk` time steps in order, each one
torch.compile-fused kernel over every (channel, state) pair, carrying only
the (B, D, n) state between blocks, and under autograd the chunk-parallel
form runs eagerly: groups of up to `GROUP_CHUNKS` chunks at once, every
chunk's end state from a zero start, the boundary states chained through
the group, then each chunk's outputs from its true start state (compiling a
backward takes minutes). Peak extra memory beyond the inputs, projections
and output is O(GROUP_CHUNKS·D·n) there, never (N, D, n).
`Variant.execution` records which path ran.
float16/bfloat16 cases project in their own dtype and scan in float32 (as
Mamba's kernels keep the state in float32). The float64 reference is the plain
sequential recurrence.

**mamba2-ssd** (Mamba-2's state-space duality, Dao & Gu 2024). Heads map to
heads and head_dim to Mamba-2's P; the state size N is head_dim, with X = v,
B = k and C = q per head (their projections are the model's k and q
projections in a quality cell), Δ_t = softplus(x_t·w + b) per head, a scalar
A_h = −exp(A_log,h) per head and a skip gain D_h. Learned weights, initialised
as Mamba-2 does: w (H, P) N(0, 1/(4P)), b = softplus⁻¹(Δ₀) (Δ₀ as above),
A_log = log U(1, 16) and D = 1:

    h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ   (n, P)       y_t = h_tᵀ C_t + D x_t   (P)

computed by the chunked SSD algorithm: within a chunk of `chunk` steps the
quadratic (attention-like) form (C Bᵀ ∘ L) X with L = exp(segsum(Δ A)), using
the numerically stable segment sum; between chunks the (n, P) states are
passed along (themselves `STATE_GROUP` chunks at a time in the same segment-sum
form, so only one state per group is passed sequentially). The float64 reference is the sequential recurrence.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from attnbench import (
    AttentionInputs,
    Case,
    Knob,
    LearnedWeight,
    Tolerance,
    Variant,
    constant,
    log_uniform,
    normal,
    uniform,
)
from attnbench.variants._recurrent import CudaExtra, time_major
from attnbench.variants._selective_scan import LANES as SCAN_LANES
from attnbench.variants._selective_scan import (
    native_scan,
    selective_scan_blocks,
    selective_scan_native,
    softplus_bias_native,
)

GROUP_CHUNKS = 64
STATE_GROUP = 16
DELTA_MIN, DELTA_MAX, DELTA_FLOOR = 1e-3, 1e-1, 1e-4                       # Mamba's Δ initialisation


def delta_bias_init(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Mamba's Δ bias: softplus⁻¹(Δ₀), Δ₀ log-uniform in [1e-3, 1e-1] and floored at 1e-4."""
    dt = log_uniform(DELTA_MIN, DELTA_MAX)(generator, shape).clamp(min=DELTA_FLOOR)
    return dt + torch.log(-torch.expm1(-dt))


def s4d_real_a_log(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Mamba-1's A_log: log(1, 2, ..., n) in every channel (S4D-real, A = −(j+1)); draws nothing."""
    return torch.log(torch.arange(1, shape[-1] + 1, dtype=torch.float64)).expand(shape).clone()


def _decay_rates(a_log: torch.Tensor) -> torch.Tensor:
    """A = −exp(A_log), formed in float32 for half dtypes (the scans keep their state in float32)."""
    if a_log.dtype in (torch.float16, torch.bfloat16):
        a_log = a_log.float()
    return -torch.exp(a_log)


# ---------------------------------------------------------------- mamba-scan (Mamba-1)

def selective_learned_weights(inner: int, state_dim: int) -> dict[str, LearnedWeight]:
    """Mamba-1's selection weights for D = `inner` channels and state size n = `state_dim`."""
    rank = -(-inner // 16)
    return {
        "w_delta_down": LearnedWeight((inner, rank), normal(inner ** -0.5), doc="Δ's low-rank input projection W↓"),
        "w_delta_up": LearnedWeight((rank, inner), uniform(-rank ** -0.5, rank ** -0.5), doc="Δ's projection W↑"),
        "delta_bias": LearnedWeight((inner,), delta_bias_init, decay=False, doc="Δ's bias b"),
        "w_b": LearnedWeight((inner, state_dim), normal(inner ** -0.5), doc="B's projection W_B"),
        "w_c": LearnedWeight((inner, state_dim), normal(inner ** -0.5), doc="C's projection W_C"),
        "a_log": LearnedWeight((inner, state_dim), s4d_real_a_log, decay=False, doc="A = −exp(A_log)"),
        "d_skip": LearnedWeight((inner,), constant(1.0), decay=False, doc="the skip gain D"),
    }


def selective_projections(q, k, v, weights, native_softplus: bool = False):
    """Δ, x, B, C (B, N, D), (B, N, D), (B, N, n), (B, N, n) and A (D, n) from the case's tensors.

    With `native_softplus` (no autograd, float32 or float64, the C scan built) Δ's bias and softplus run in
    one C pass over x W↓ W↑ instead of torch's two.
    """
    batch, heads, seq_len, head_dim = v.shape
    inner = heads * head_dim

    def flat(t):
        return t.transpose(1, 2).reshape(batch, seq_len, inner)           # (B, N, D), channel = head·d + p

    x = flat(v)
    low_rank = x @ weights["w_delta_down"]                                # (B, N, r)
    if native_softplus:
        delta = softplus_bias_native(low_rank @ weights["w_delta_up"], weights["delta_bias"])   # (B, N, D)
    else:
        pre_activation = torch.addmm(weights["delta_bias"], low_rank.reshape(-1, low_rank.shape[-1]),
                                     weights["w_delta_up"])
        delta = torch.nn.functional.softplus(pre_activation).view(batch, seq_len, inner)   # (B, N, D)
    b = flat(k) @ weights["w_b"]                                          # (B, N, n)
    c = flat(q) @ weights["w_c"]                                          # (B, N, n)
    return delta, x, b, c, _decay_rates(weights["a_log"])


def selective_inputs(case: Case, q, k, v, state_dim: int, dtype: torch.dtype):
    """`selective_projections` on the seeded starting weights in `dtype` (for tests)."""
    case = replace(case, params={**case.params, "state_dim": state_dim})
    weights = MambaScan().weights(case, AttentionInputs(q, k, v))
    return selective_projections(q, k, v, {name: w.to(dtype) for name, w in weights.items()})


def selective_scan_sequential(delta, x, b, c, a) -> torch.Tensor:
    """The plain recurrence, one time step at a time: y (B, N, D)."""
    batch, seq_len, inner = x.shape
    h = x.new_zeros(batch, inner, a.shape[-1])                            # (B, D, n)
    outputs = []
    for t in range(seq_len):
        decay = torch.exp(delta[:, t, :, None] * a)                       # exp(Δ_t A)   (B, D, n)
        drive = (delta[:, t] * x[:, t])[:, :, None] * b[:, t, None, :]    # Δ_t x_t ⊗ B_t (B, D, n)
        h = decay * h + drive
        outputs.append((h * c[:, t, None, :]).sum(-1))                    # h_t C_t      (B, D)
    return torch.stack(outputs, dim=1)                                    # (B, N, D)


def _chunk_starts(h, delta, drive_x, b, a):
    """The state entering each of the K chunks of a group, and the state after it.

    h (B, D, n) enters the group; delta, drive_x (B, K, T, D); b (B, K, T, n).
    All chunks at once, each from a zero start: total decay P and end state e
    (B, K, D, n); then the K boundary states are chained, h ← P h + e.
    """
    state = None
    for t in range(delta.shape[2]):
        decay = torch.exp(delta[:, :, t, :, None] * a)                    # (B, K, D, n)
        drive = drive_x[:, :, t, :, None] * b[:, :, t, None, :]
        state = drive if state is None else decay * state + drive
    total_decay = torch.exp(delta.sum(dim=2)[..., None] * a)              # (B, K, D, n)
    starts = []
    for j in range(delta.shape[1]):
        starts.append(h)
        h = total_decay[:, j] * h + state[:, j]
    return torch.stack(starts, dim=1), h


def _chunk_outputs(start, delta, drive_x, b, c, a):
    """Per chunk, from its true start state (B, K, D, n): the outputs y (B, K, T, D)."""
    h = start
    outputs = []
    for t in range(delta.shape[2]):
        h = torch.exp(delta[:, :, t, :, None] * a) * h + drive_x[:, :, t, :, None] * b[:, :, t, None, :]
        outputs.append((h * c[:, :, t, None, :]).sum(-1))                 # (B, K, D)
    return torch.stack(outputs, dim=2)


def selective_scan_chunked(delta, x, b, c, a, chunk: int, compiled: bool = True) -> torch.Tensor:
    """The same recurrence, fast: y (B, N, D).

    Without autograd (and `compiled`) by compiled blocks of `chunk` time steps in order
    (`selective_scan_blocks`); under autograd chunk-parallel and eager. Padding steps have
    Δ = 0 (decay 1, no input), so they leave the state alone.
    """
    tracking = torch.is_grad_enabled() and any(t.requires_grad for t in (delta, x, b, c))
    # compiling the backward of the unrolled chunk kernels takes minutes: under autograd they run eagerly
    compiled = compiled and not tracking
    out_dtype = x.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        delta, x, b, c, a = (t.float() for t in (delta, x, b, c, a))
    if compiled:                                                          # no autograd: blocks of time, in order
        return selective_scan_blocks(delta, x, b, c, a, chunk).to(out_dtype)
    starts_fn, outputs_fn = _chunk_starts, _chunk_outputs
    batch, seq_len, inner = x.shape
    state_dim = a.shape[-1]
    chunks = -(-seq_len // chunk)
    group = min(GROUP_CHUNKS, chunks)
    groups = -(-chunks // group)
    pad = groups * group * chunk - seq_len
    drive_x = delta * x

    def grouped(t):                                                       # (B, N, F) -> (B, groups, K, T, F)
        t = torch.nn.functional.pad(t, (0, 0, 0, pad))
        return t.view(batch, groups, group, chunk, t.shape[-1])

    def group_of(t, g):
        # a fresh contiguous (B, K, T, F) block: the same strides at every seq_len, so nothing recompiles
        return t[:, g].clone(memory_format=torch.contiguous_format)

    delta_g, drive_g, b_g, c_g = grouped(delta), grouped(drive_x), grouped(b), grouped(c)
    h = x.new_zeros(batch, inner, state_dim)                              # state entering the group
    outputs = []
    for g in range(groups):
        d_g, dx_g, bb_g = group_of(delta_g, g), group_of(drive_g, g), group_of(b_g, g)
        starts, h = starts_fn(h, d_g, dx_g, bb_g, a)                      # (B, K, D, n), (B, D, n)
        outputs.append(outputs_fn(starts, d_g, dx_g, bb_g, group_of(c_g, g), a))
    y = torch.stack(outputs, dim=1).view(batch, groups * group * chunk, inner)[:, :seq_len]
    return y.to(out_dtype)


def _tracking(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _runs_native(v: torch.Tensor) -> bool:
    return v.device.type == "cpu" and native_scan().available


def _native_output(delta, v, b, c, a, d_skip) -> torch.Tensor:
    """The C scan's (B, H, N, d) output (its C backward under autograd); half dtypes scan in float32, as elsewhere."""
    if v.dtype in (torch.float32, torch.float64):
        return selective_scan_native(delta, v, b, c, a.to(v.dtype), d_skip.to(v.dtype))
    tensors = (t.float() for t in (delta, v, b, c, a, d_skip))
    return selective_scan_native(*tensors).to(v.dtype)


class _StateSpace(Variant):
    family = "ssm"
    supports_cross = False
    reference_rows = False
    dtypes = ("float32", "float16", "bfloat16", "float64")
    # Low-precision inputs feed a recurrence (the scan in float32, SSD's chunk products in the case's
    # dtype): observed on seeded inputs (seq_len 64-1024) and MiniLM's q, k, v (rel_l2 / max_rel) float16
    # 1.2e-3 / 3.5e-3 (grads 1.3e-3 / 9.9e-3), bfloat16 9.9e-3 / 5.3e-2 (grads 1.0e-2 / 7.5e-2); float32
    # and float64 keep the defaults.
    tolerances = {
        "float16": Tolerance(rel_l2=1e-2, max_rel=3e-2, grad_rel_l2=1e-2, grad_max_rel=1e-1),
        "bfloat16": Tolerance(rel_l2=6e-2, max_rel=3e-1, grad_rel_l2=6e-2, grad_max_rel=4e-1),
    }
    cross_reason = "is a sequence map (x = v, B from k, C from q along one sequence): needs kv_len == seq_len"
    # In a trained model, Mamba's layer gates and Mamba-2's also normalises what the scan outputs:
    # y ⊙ silu(x W_z), then RMSNorm per head. With both, mamba2-ssd reached MQAR recall 0.980 after
    # 192,000 examples (lr 3e-3, seed 0); without them 0.145.
    output_gate = True
    output_norm = True


class MambaScan(_StateSpace):
    name = "mamba-scan"
    computes = "selective_ssm"
    description = "Mamba's selective scan (input-dependent Δ, B, C): a C scan on the CPU, compiled time blocks elsewhere"
    compiles = True                                                       # where the C scan cannot run: compiles_for
    knobs = {
        "state_dim": Knob(int, default=16, minimum=1, doc="n, the state size per channel (h_t: (B, D, n))"),
        "chunk": Knob(int, default=16, minimum=1, doc="time steps per chunk of the compiled blocks and of the autograd path (the C scan has none)"),
    }

    def learned_weights(self, case: Case) -> dict[str, LearnedWeight]:
        return selective_learned_weights(case.heads * case.head_dim, self.knob_values(case, "state_dim")[0])

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        chunk = self.knob_values(case, "chunk")[0]
        batch, heads, seq_len, head_dim = v.shape
        weights = self.weights(case, inputs)

        def forward() -> torch.Tensor:
            fused = v.device.type == "cpu" and native_scan().takes(v.dtype) and not _tracking(q, k, v, *weights.values())
            delta, x, b, c, a = selective_projections(q, k, v, weights, native_softplus=fused)
            if _runs_native(v):
                return _native_output(delta, v, b, c, a, weights["d_skip"])   # (B, H, N, d)
            y = selective_scan_chunked(delta, x, b, c, a, chunk) + x * weights["d_skip"]   # (B, N, D)
            return y.view(batch, seq_len, heads, head_dim).transpose(1, 2).contiguous()   # (B, H, N, d)

        forward()                                                         # compile outside the timed region
        return forward

    def execution(self, case: Case) -> str:
        """The native C scan (and its C backward) on the CPU; else compiled time blocks, or eager chunks under autograd."""
        if case.device == "cpu" and native_scan().available:
            return "native C scan" if case.mode == "fwd" else "native C scan and backward"
        return "compiled time blocks" if case.mode == "fwd" else "eager chunks (autograd)"

    def compiles_for(self, case: Case) -> bool:
        """torch.compile runs only where the native C scan does not (CUDA, or no C compiler here)."""
        return not (case.device == "cpu" and native_scan().available)

    def state_size(self, case: Case) -> int:
        """h_t (D, n) with D = heads·head_dim channels."""
        return case.heads * case.head_dim * self.knob_values(case, "state_dim")[0]

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        batch, heads, seq_len, head_dim = v.shape
        weights = self.weights(case, inputs)
        delta, x, b, c, a = selective_projections(q, k, v, weights)
        y = selective_scan_sequential(delta, x, b, c, a) + x * weights["d_skip"]
        return y.view(batch, seq_len, heads, head_dim).transpose(1, 2)

    def flops(self, case: Case) -> int:
        """The projections and the skip, and per (t, channel, state) the scan's exp(ΔA) (2), its drive (1), the update
        of h (2) and y's term (2): what the one pass of the C scan performs."""
        return self._flops(case, scan_ops=7)

    def performed_flops(self, case: Case) -> int | None:
        """Where the compiled time blocks run, their two passes: the first forms exp(ΔA), the drive and h (5 per
        element), the second all of it again with y (7)."""
        return self._flops(case, scan_ops=5 + 7) if self.execution(case) == "compiled time blocks" else None

    def _flops(self, case: Case, scan_ops: int) -> int:
        state_dim, _ = self.knob_values(case, "state_dim", "chunk")
        inner = case.heads * case.head_dim
        rank = -(-inner // 16)
        projections = 4 * inner * rank + 4 * inner * state_dim + 4 * inner   # W↓W↑, W_B, W_C, bias + softplus
        projections += 2 * inner                                             # the skip D ⊙ x
        return case.batch * case.seq_len * (projections + inner * state_dim * scan_ops)

    def memory_model(self, case: Case) -> int:
        state_dim, chunk = self.knob_values(case, "state_dim", "chunk")
        n_steps, inner = case.seq_len, case.heads * case.head_dim
        rank = -(-inner // 16)
        chunks = -(-n_steps // chunk)
        group = min(GROUP_CHUNKS, chunks)
        padded = -(-chunks // group) * group * chunk
        e = case.element_bytes
        scan_e = 8 if case.dtype == "float64" else 4
        # flattened x, q, k; low-rank Δ; pre-activation and Δ; B and C
        projections = e * (3 * n_steps * inner + n_steps * rank + 2 * n_steps * inner + 2 * n_steps * state_dim)
        if e != scan_e:                                                   # float32 copies for the scan
            projections += scan_e * (2 * n_steps * inner + 2 * n_steps * state_dim)
        if (self.execution(case) or "").startswith("native C scan"):
            # the output; off 16-lane heads also the padded x and Δ, the padded output and its (B, H, N, d) copy
            copies = 1 if case.head_dim % SCAN_LANES == 0 else 4
            return case.batch * (projections + scan_e * copies * n_steps * inner + e * n_steps * inner)
        # Δx, the padded groups of Δ, Δx, B, C, the group outputs, their stack, the (B, H, N, d) output
        working = scan_e * (n_steps * inner + 2 * padded * inner + 2 * padded * state_dim + 2 * padded * inner)
        working += e * 4 * n_steps * inner                                # and D ⊙ x, y + D ⊙ x
        per_group = scan_e * 4 * group * inner * state_dim                # P, e, the stacked starts, kernel temporaries
        return case.batch * (projections + working + per_group)


# ---------------------------------------------------------------- mamba2-ssd (Mamba-2)

def ssd_learned_weights(heads: int, head_dim: int) -> dict[str, LearnedWeight]:
    """Mamba-2's selection weights per head: Δ's projection and bias, A (as A_log) and the skip D."""
    return {
        "w_delta": LearnedWeight((heads, head_dim, 1), normal(0.5 * head_dim ** -0.5), doc="Δ's projection w"),
        "delta_bias": LearnedWeight((heads, 1, 1), delta_bias_init, decay=False, doc="Δ's bias b"),
        "a_log": LearnedWeight((heads,), a_log_uniform, decay=False, doc="A = −exp(A_log), A in [−16, −1]"),
        "d_skip": LearnedWeight((heads, 1, 1), constant(1.0), decay=False, doc="the skip gain D"),
    }


def a_log_uniform(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Mamba-2's A_log: log of A₀ ~ U(1, 16) per head."""
    return torch.log(uniform(1.0, 16.0)(generator, shape))


def ssd_projections(q, k, v, weights):
    """x (B, H, N, P), Δ (B, H, N), A (H,), B and C (B, H, N, n) from the case's tensors."""
    delta = torch.nn.functional.softplus(v @ weights["w_delta"] + weights["delta_bias"]).squeeze(-1)   # (B, H, N)
    return v, delta, -torch.exp(weights["a_log"]), k, q


def ssd_inputs(case: Case, q, k, v, dtype: torch.dtype):
    """`ssd_projections` on the seeded starting weights in `dtype` (for tests)."""
    weights = Mamba2SSD().weights(case, AttentionInputs(q, k, v))
    return ssd_projections(q, k, v, {name: w.to(dtype) for name, w in weights.items()})


def ssd_sequential(x, delta, a, b, c) -> torch.Tensor:
    """The plain recurrence h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ, y_t = h_tᵀ C_t: y (B, H, N, P)."""
    batch, heads, seq_len, head_dim = x.shape
    h = x.new_zeros(batch, heads, b.shape[-1], head_dim)                  # (B, H, n, P)
    outputs = []
    for t in range(seq_len):
        decay = torch.exp(delta[:, :, t] * a)[:, :, None, None]           # (B, H, 1, 1)
        h = decay * h + delta[:, :, t, None, None] * b[:, :, t, :, None] * x[:, :, t, None, :]
        outputs.append((c[:, :, t, :, None] * h).sum(-2))                 # (B, H, P)
    return torch.stack(outputs, dim=2)


def segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., i, j] = a_{j+1} + ... + a_i for j <= i and −inf above the diagonal, for a (..., Q).

    Summed directly (a masked cumulative sum), not as a difference of cumulative
    sums, which would cancel catastrophically.
    """
    size = a.shape[-1]
    repeated = a[..., :, None].expand(*a.shape, size)                     # [i, j] = a_i
    below = torch.ones(size, size, dtype=torch.bool, device=a.device).tril(-1)
    sums = repeated.masked_fill(~below, 0.0).cumsum(dim=-2)               # Σ_{j < r <= i} a_r
    return sums.masked_fill(~below.logical_or(torch.eye(size, dtype=torch.bool, device=a.device)), float("-inf"))


def pass_states(chunk_log_decay: torch.Tensor, chunk_states: torch.Tensor,
                group: int = STATE_GROUP) -> torch.Tensor:
    """The state entering each chunk, s_in[j] = Σ_{i<j} exp(l_{i+1} + ... + l_{j−1}) s[i].

    chunk_log_decay l (B, H, c) and chunk_states s (B, H, c, n, P). Chunks are
    taken `group` at a time: within a group the same segment-sum form as
    inside a chunk (a (group × group) matrix), and only one state per group is
    passed along sequentially, so there are c / group small steps, not c.
    """
    batch, heads, chunks, state_dim, head_dim = chunk_states.shape
    groups = -(-chunks // group)
    pad = groups * group - chunks
    log_decay = torch.nn.functional.pad(chunk_log_decay, (0, pad)).view(batch, heads, groups, group)
    states = torch.nn.functional.pad(chunk_states.reshape(batch, heads, chunks, state_dim * head_dim), (0, 0, 0, pad))
    states = states.view(batch, heads, groups, group, state_dim * head_dim)        # (B, H, g, G, nP)
    ends = torch.exp(segsum(log_decay)) @ states                          # state after chunk i from a zero group start
    local = torch.nn.functional.pad(ends[..., :-1, :], (0, 0, 1, 0))      # entering state, zero group start
    inclusive = log_decay.cumsum(dim=-1)                                  # (B, H, g, G)
    exclusive = torch.nn.functional.pad(inclusive[..., :-1], (1, 0))
    h = states.new_zeros(batch, heads, state_dim * head_dim)
    entering = []
    for g in range(groups):                                               # one state per group, passed along
        entering.append(h)
        h = ends[:, :, g, -1] + torch.exp(inclusive[:, :, g, -1, None]) * h
    entering = torch.stack(entering, dim=2)                               # (B, H, g, nP)
    starts = local + torch.exp(exclusive)[..., None] * entering[:, :, :, None, :]
    return starts.view(batch, heads, groups * group, state_dim, head_dim)[:, :, :chunks]


def ssd_chunked(x, delta, a, b, c, chunk: int) -> torch.Tensor:
    """Mamba-2's SSD: intra-chunk quadratic form plus inter-chunk state passing. y (B, H, N, P)."""
    batch, heads, seq_len, head_dim = x.shape
    state_dim = b.shape[-1]
    chunks = -(-seq_len // chunk)
    pad = chunks * chunk - seq_len
    x = x * delta[..., None]                                              # Δ_t x_t, (B, H, N, P)
    if pad:                                                               # padding: Δ = 0, no decay and no input
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        b, c = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (b, c))
        delta = torch.nn.functional.pad(delta, (0, pad))
    x = x.view(batch, heads, chunks, chunk, head_dim)                     # (B, H, c, Q, P)
    b = b.reshape(batch, heads, chunks, chunk, state_dim)                 # (B, H, c, Q, n)
    c = c.reshape(batch, heads, chunks, chunk, state_dim)
    log_decay = (delta * a[:, None]).view(batch, heads, chunks, chunk)    # Δ A, (B, H, c, Q)
    cumulative = log_decay.cumsum(dim=-1)                                 # (B, H, c, Q)

    # 1. within each chunk: y = (C Bᵀ ∘ L) X, L_ij = exp(Σ_{j<r<=i} ΔA_r)
    mixing = (c @ b.transpose(-2, -1)) * torch.exp(segsum(log_decay))     # (B, H, c, Q, Q)
    y = mixing @ x                                                        # (B, H, c, Q, P)
    del mixing
    # 2. each chunk's end state from a zero start
    to_end = torch.exp(cumulative[..., -1:] - cumulative)                 # (B, H, c, Q)
    chunk_states = (b * to_end[..., None]).transpose(-2, -1) @ x          # (B, H, c, n, P)
    # 3. the states entering each chunk
    starts = pass_states(cumulative[..., -1], chunk_states)               # (B, H, c, n, P)
    # 4. what the entering state contributes inside each chunk
    y = y + (c * torch.exp(cumulative)[..., None]) @ starts               # (B, H, c, Q, P)
    return y.view(batch, heads, chunks * chunk, head_dim)[:, :, :seq_len]


class Mamba2SSD(_StateSpace):
    name = "mamba2-ssd"
    computes = "scalar_decay_ssm"
    description = "Mamba-2's chunked state-space-duality algorithm (scalar A per head, stable segment sum)"
    knobs = {"chunk": Knob(int, default=64, minimum=1, doc="time steps per chunk of the SSD algorithm")}

    def learned_weights(self, case: Case) -> dict[str, LearnedWeight]:
        return ssd_learned_weights(case.heads, case.head_dim)

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        chunk = self.knob_values(case, "chunk")[0]
        weights = self.weights(case, inputs)

        def forward() -> torch.Tensor:
            return ssd_chunked(*ssd_projections(q, k, v, weights), chunk) + v * weights["d_skip"]

        return forward

    def state_size(self, case: Case) -> int:
        """h_t (n, P) per head, with n = P = head_dim."""
        return case.heads * case.head_dim * case.head_dim

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        weights = self.weights(case, inputs)
        return ssd_sequential(*ssd_projections(q, k, v, weights)) + v * weights["d_skip"]

    def flops(self, case: Case) -> int:
        """The matmul FLOPs of the chunked SSD forward, as `ssd_chunked` runs it (a multiply-add is 2).

        Like softmax attention's count, only the products count: the elementwise
        work (softplus, Δ·x, segsum's cumulative sums, exp, the ∘ L product and
        the decay scalings) does not, and it is what FlopCounterMode cannot see.
        The time axis is padded to whole chunks and the chunks to whole
        `STATE_GROUP`s, as the forward computes them. `scalar_decay_ssm` has this
        one implementation, whose cost is the SSD algorithm's by construction
        (O(N·Q·(n + P)) for chunk Q), so the count is that algorithm's, not a
        variant-independent one.
        """
        chunk, p = self.knob_values(case, "chunk")[0], case.head_dim
        n = p
        chunks = -(-case.seq_len // chunk)
        steps = chunks * chunk
        groups = -(-chunks // STATE_GROUP)
        per_head = (2 * case.seq_len * p                                  # Δ = x·w  (N, P) @ (P, 1)
                    + 2 * steps * chunk * (n + p)                         # C Bᵀ (Q × Q per chunk), then (·) X
                    + 2 * steps * n * p                                   # chunk end states (B ∘ decay)ᵀ X
                    + 2 * groups * STATE_GROUP ** 2 * n * p               # state passing: exp(segsum) @ states
                    + 2 * steps * n * p)                                  # entering state: (C ∘ decay) @ starts
        return case.batch * case.heads * per_head

    def memory_model(self, case: Case) -> int:
        chunk, p = self.knob_values(case, "chunk")[0], case.head_dim
        n = p
        chunks = -(-case.seq_len // chunk)
        steps = chunks * chunk
        per_head = (steps * p * 2 + steps * n * 2                          # Δx (padded) and padded B, C
                    + 3 * steps * chunk                                   # segsum's sums and exp, C Bᵀ
                    + 3 * steps * p                                       # y, the correction, their sum
                    + 2 * chunks * n * p + 2 * steps * n + 4 * steps)     # states, starts, scaled B/C, cumsums
        return case.batch * case.heads * case.element_bytes * per_head


# ---------------------------------------------------------------- mamba_ssm's kernels (extra "mamba")

def selective_scan_arguments(delta, x, b, c, a, d_skip=None) -> dict:
    """mamba_ssm's `selective_scan_fn` arguments from our Δ, x (B, N, D), B, C (B, N, n), A (D, n) and the skip
    D (D,): u and delta (B, D, L), B and C (B, n, L), Δ already through its softplus (no delta_bias, no z)."""
    return {"u": x.transpose(1, 2), "delta": delta.transpose(1, 2), "A": a, "B": b.transpose(1, 2),
            "C": c.transpose(1, 2), "D": d_skip, "delta_softplus": False}


def chunk_scan_arguments(x, delta, a, b, c, chunk: int, d_skip=None) -> dict:
    """mamba_ssm's `mamba_chunk_scan_combined` arguments from our SSD inputs: x (B, L, H, P), dt = Δ (B, L, H),
    A (H,), B and C (B, L, H, n) (one group per head), chunk_size, and the skip D (H,)."""
    return {"x": time_major(x), "dt": delta.transpose(1, 2), "A": a, "B": time_major(b), "C": time_major(c),
            "chunk_size": chunk, "D": None if d_skip is None else d_skip.reshape(-1)}


class MambaSsm(CudaExtra):
    """A kernel of the `mamba_ssm` package (the `mamba` extra) on one of our SSM variants' weights."""

    package, extra = "mamba_ssm", "mamba"


class MambaSsmScan(MambaSsm, MambaScan):
    name = "mamba-ssm-scan"
    description = "mamba_ssm's selective_scan_fn (CUDA) on mamba-scan's Δ, B, C: mamba-scan's function"
    compiles = False

    def execution(self, case: Case) -> None:
        return None                                                       # one way: mamba_ssm's kernel

    def compiles_for(self, case: Case) -> bool:
        return False

    def prepare(self, case: Case, inputs: AttentionInputs):
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        q, k, v = inputs.tensors()
        batch, heads, seq_len, head_dim = v.shape
        weights = self.weights(case, inputs)

        def forward() -> torch.Tensor:
            delta, x, b, c, a = selective_projections(q, k, v, weights)
            y = selective_scan_fn(**selective_scan_arguments(delta, x, b, c, a, weights["d_skip"]))   # (B, D, L)
            return y.transpose(1, 2).reshape(batch, seq_len, heads, head_dim).transpose(1, 2)

        return forward


class MambaSsmSSD(MambaSsm, Mamba2SSD):
    name = "mamba-ssm-ssd"
    description = "mamba_ssm's mamba_chunk_scan_combined (Triton, CUDA): mamba2-ssd's function"

    def prepare(self, case: Case, inputs: AttentionInputs):
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        q, k, v = inputs.tensors()
        chunk = self.knob_values(case, "chunk")[0]
        weights = self.weights(case, inputs)

        def forward() -> torch.Tensor:
            arguments = chunk_scan_arguments(*ssd_projections(q, k, v, weights), chunk, weights["d_skip"])
            return mamba_chunk_scan_combined(**arguments).transpose(1, 2)   # (B, L, H, P) -> (B, H, N, P)

        return forward

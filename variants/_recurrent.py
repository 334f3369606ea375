"""What the linear recurrences (retnet, gla, deltanet, gated-deltanet) share: the case's roles, decode, bounds.

Each of them carries a state S (B, H, d_k, d_v) along the sequence and reads
it with the query, o_t = q_t S_t: causal by nature, so a non-causal case is
refused with that reason rather than silently computing the causal function.
The case maps one to one: q, k (B, H, N, d_k) and v (B, H, N, d_v), heads
independent, q scaled by 1/√d_k (flash-linear-attention's default `scale`);
the gates, decays and β are functions of k (the token being written) through
the variant's learned weights.

A decode case (kv_len = M > seq_len = N, causal, aligned at the end of the
keys) is a decode step: `prepare` runs the chunked form over the M − N prefix
keys and values once and keeps only the state it ends in; the timed forward
then runs the plain recurrence for the N new tokens (q, and the last N keys
and values) from that state. What the step moves is the state, read and
written, not a KV cache (`bytes_moved`). The float64 reference is the plain
recurrence over all M steps from a zero state, read at the last N.

Half dtypes (float16, bfloat16) compute in float32 and return their own
dtype, as fla's kernels keep the state in float32.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

import torch

from attnbench import AttentionInputs, Case, Knob, Tolerance, Variant
from attnbench.variants._recurrent_kernels import chain_native, chain_runs_native, native_chain

HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence runs in: float32 for half dtypes, else the case's own."""
    return torch.float32 if dtype in HALF else dtype


def chunked_view(t: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, H, N, ...) zero-padded along N to whole chunks and viewed (B, H, c, Q, ...)."""
    seq_len = t.shape[2]
    chunks = -(-seq_len // chunk)
    pad = chunks * chunk - seq_len
    if pad:
        widths = [0, 0] * (t.dim() - 3) + [0, pad]
        t = torch.nn.functional.pad(t, widths)
    return t.view(*t.shape[:2], chunks, chunk, *t.shape[3:])


def segment_log_decay(g: torch.Tensor) -> torch.Tensor:
    """[..., t, s] = g_{s+1} + ... + g_t for s <= t, −inf above the diagonal, for g (..., Q).

    Summed directly (a masked cumulative sum), not as a difference of
    cumulative sums, so short segments keep their precision.
    """
    size = g.shape[-1]
    repeated = g[..., :, None].expand(*g.shape, size)                     # [t, s] = g_t
    below = torch.ones(size, size, dtype=torch.bool, device=g.device).tril(-1)
    sums = repeated.masked_fill(~below, 0.0).cumsum(dim=-2)               # Σ_{s < r <= t} g_r
    keep = below | torch.eye(size, dtype=torch.bool, device=g.device)
    return sums.masked_fill(~keep, float("-inf"))


def builds_graph(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records ops on `tensors` here: then a chain cannot write its steps in place (out=)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def carry_states(chunk_decay: torch.Tensor, chunk_states: torch.Tensor, state: torch.Tensor | None):
    """The state entering each chunk, S_in[j] = decay_j-1 ⊙ S_in[j−1] + E[j−1], and the state after the last.

    chunk_decay (B, H, c, d_k, 1) or (B, H, c, 1, 1): each chunk's total decay;
    chunk_states E (B, H, c, d_k, d_v): each chunk's end state from a zero
    start; `state` (B, H, d_k, d_v) enters the first chunk (None: zeros).
    One multiply-add per chunk: c small steps of d_k·d_v per head, far less
    than the chunks' own work: in C (`chain_native`) where autograd records
    nothing and the library is built, else written in place into the result
    unless autograd records them.
    """
    chunks = chunk_states.shape[2]
    decay = chunk_decay.expand(*chunk_states.shape[:3], *chunk_decay.shape[3:])
    first = torch.zeros_like(chunk_states[:, :, 0]) if state is None else state
    traced = builds_graph(chunk_decay, chunk_states, state)
    if not traced and chain_runs_native(decay, chunk_states, first):
        batch, heads = chunk_states.shape[:2]
        rows = decay[..., 0].expand(*chunk_states.shape[:4])              # (B, H, c, d_k)
        entering, final = chain_native(rows.flatten(0, 1), chunk_states.flatten(0, 1), first.flatten(0, 1))
        return entering.unflatten(0, (batch, heads)), final.unflatten(0, (batch, heads))
    if traced:
        steps = [first]
        for j in range(chunks):
            steps.append(torch.addcmul(chunk_states[:, :, j], decay[:, :, j], steps[-1]))
        return torch.stack(steps[:-1], dim=2), steps[-1]
    entering = torch.empty_like(chunk_states)                             # (B, H, c, d_k, d_v)
    entering[:, :, 0].copy_(first)
    for j in range(chunks - 1):
        torch.addcmul(chunk_states[:, :, j], decay[:, :, j], entering[:, :, j], out=entering[:, :, j + 1])
    return entering, torch.addcmul(chunk_states[:, :, -1], decay[:, :, -1], entering[:, :, -1])


class Recurrence(Variant):
    """Base of the linear recurrences: reasons, decode plumbing, state size and the bytes a decode step moves.

    A subclass declares `learned_weights(case)` (its gates', decays' and β's
    projections: seeded in kernel cells, trained in quality cells), or
    `fixed_weights`, and `chunked(q, k, v, weights, chunk, state)` and
    `sequential(q, k, v, weights, state)`, each returning (output, final state),
    with q already scaled and `weights` a dict by name; q may be shorter than
    k and v, aligned at their end.
    """

    supports_cross = True
    reference_rows = False
    dtypes = ("float32", "float16", "bfloat16", "float64")
    causal_flags_reason = ("is a causal recurrence by nature (output t reads tokens 0..t only; a non-causal form "
                           "would need a second, reversed scan): set causal = true")
    # Observed on seeded inputs (seq_len 64-1024, qk_std 0.5-1): float32 rel_l2 below 1e-6; half dtypes compute
    # in float32, so their error is the output's rounding: bfloat16 rel_l2 3e-3, float16 4e-4.
    tolerances = {
        "float16": Tolerance(rel_l2=5e-3, max_rel=2e-2, grad_rel_l2=1e-2, grad_max_rel=5e-2),
        "bfloat16": Tolerance(rel_l2=3e-2, max_rel=1e-1, grad_rel_l2=5e-2, grad_max_rel=2e-1),
    }
    knobs = {"chunk": Knob(int, default=64, minimum=1, doc="time steps per chunk of the chunk-parallel form")}
    in_c: ClassVar[bool] = False                                         # its whole chunked form runs in recurrent_kernels.c

    def runs_in_c(self, case: Case) -> bool:
        """Whether a whole-sequence cell runs the chunked form in C (`in_c`): where autograd records nothing (fwd
        cells), on the CPU, and the library built."""
        return (self.in_c and case.kv_len == case.seq_len and case.mode == "fwd" and case.device == "cpu"
                and native_chain().available)

    def execution(self, case: Case) -> str:
        """A decode step runs the recurrence from the prefix's state; a whole sequence the chunked form, in C where
        `runs_in_c` (`chunked, in C`), else in torch (`chunked`)."""
        if case.kv_len != case.seq_len:
            return "recurrent step from the prefix's state"
        return "chunked, in C" if self.runs_in_c(case) else "chunked"

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if not case.causal:
            reasons.append(self.causal_flags_reason)
        if case.kv_len < case.seq_len:
            reasons.append("needs kv_len >= seq_len: the queries are the last seq_len of the kv_len tokens "
                           "(kv_len > seq_len is a decode step against the prefix's state)")
        elif case.kv_len > case.seq_len and case.mode == "fwd_bwd":
            reasons.append("a decode step (kv_len > seq_len) runs against a state built in prepare: "
                           "forward only, no backward into the prefix")
        return reasons

    def probe_case(self, device: str) -> Case:
        """The base's probe case, causal (the only form a recurrence has)."""
        return replace(super().probe_case(device), causal=True)

    # ---- what a subclass declares (and `learned_weights`: its gate, decay and β projections)

    def fixed_weights(self, case: Case, dtype: torch.dtype, device=None) -> dict[str, torch.Tensor]:
        """Weights the function fixes rather than learns (RetNet's decays), name -> tensor; none by default."""
        return {}

    def chunked(self, q, k, v, weights, chunk: int, state=None):
        raise NotImplementedError

    def sequential(self, q, k, v, weights, state=None):
        raise NotImplementedError

    def prepared_inputs(self, q, k):
        """q scaled by 1/√d_k (and whatever the function does to q and k first, e.g. L2 normalisation)."""
        return q * q.shape[-1] ** -0.5, k

    # ---- the contract, derived

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        dtype = compute_dtype(q.dtype)
        chunk = self.knob_values(case, "chunk")[0]
        weights = self.mixer_weights(case, inputs, dtype)
        prefix = case.kv_len - case.seq_len
        if prefix == 0:
            def forward() -> torch.Tensor:
                q_, k_ = self.prepared_inputs(q.to(dtype), k.to(dtype))
                return self.chunked(q_, k_, v.to(dtype), weights, chunk)[0].to(q.dtype)

            return forward
        with torch.no_grad():                                             # the prefix's state, once
            _, k_prefix = self.prepared_inputs(k[:, :, :prefix].to(dtype), k[:, :, :prefix].to(dtype))
            # the chunked form reads one query per token; the prefix's outputs are not needed, so k stands in
            state = self.chunked(k_prefix, k_prefix, v[:, :, :prefix].to(dtype), weights, chunk)[1]
        k_new, v_new = k[:, :, prefix:], v[:, :, prefix:]                 # (B, H, N, d_k), (B, H, N, d_v)

        def decode_step() -> torch.Tensor:
            q_, k_ = self.prepared_inputs(q.to(dtype), k_new.to(dtype))
            return self.sequential(q_, k_, v_new.to(dtype), weights, state)[0].to(q.dtype)

        return decode_step

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        q, k, v = inputs.tensors()
        q_, k_ = self.prepared_inputs(q, k)
        return self.sequential(q_, k_, v, self.mixer_weights(case, inputs, torch.float64))[0]

    def mixer_weights(self, case: Case, inputs: AttentionInputs, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The learned weights (seeded, or the trainer's) and the fixed ones, in the dtype the recurrence runs in."""
        learned = {name: w.to(dtype) for name, w in self.weights(case, inputs).items()}
        return {**learned, **self.fixed_weights(case, dtype, inputs.q.device)}

    def padded(self, case: Case) -> tuple[int, int]:
        """(chunk, steps): the chunk knob, and seq_len padded up to whole chunks."""
        chunk = self.knob_values(case, "chunk")[0]
        return chunk, -(-case.seq_len // chunk) * chunk

    def work_shape(self, case: Case) -> tuple[int, int, int, int]:
        """(chunk, steps, chunks, element) of the chunked form's work tensors: `padded`, the chunk count, and the
        bytes per element (float32 for the half dtypes, else the case's)."""
        chunk, steps = self.padded(case)
        element = 4 if case.dtype in ("float16", "bfloat16") else case.element_bytes
        return chunk, steps, steps // chunk, element

    def state_size(self, case: Case) -> int:
        """S (d_k × d_v) per head, whatever the length."""
        return case.heads * case.head_dim * case.v_head_dim

    def state_bytes(self, case: Case) -> int:
        """Bytes of one batch's states as the step keeps them (float32 for half dtypes)."""
        element = 4 if case.dtype in ("float16", "bfloat16") else case.element_bytes
        return case.batch * self.state_size(case) * element

    def bytes_moved(self, case: Case) -> int | None:
        """A decode step: the state read and written, the new tokens' q, k, v and the output; else the default."""
        if case.kv_len == case.seq_len:
            return None
        new_tokens = case.batch * case.heads * case.seq_len * (2 * case.head_dim + 2 * case.v_head_dim)
        return 2 * self.state_bytes(case) + new_tokens * case.element_bytes

    def step_flops(self, case: Case) -> int:
        """Useful FLOPs of one recurrence step of one head (a multiply-add is 2)."""
        raise NotImplementedError

    def projection_flops(self, case: Case) -> int:
        """FLOPs per token and head of the learned gate/decay/β projections and input maps."""
        return 0

    def flops(self, case: Case) -> int:
        """The recurrence's own work: per token and head one step and the projections, for the kv_len tokens
        a self-attention case runs, and the seq_len new tokens of a decode step (its prefix is setup)."""
        tokens = case.seq_len
        return case.batch * case.heads * tokens * (self.step_flops(case) + self.projection_flops(case))


def time_major(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, ·) -> (B, N, H, ·), a view: the layout of fla's and mamba_ssm's kernels."""
    return t.transpose(1, 2)


class CudaExtra:
    """Mixin of a variant that runs another package's CUDA kernel for one of our functions (an optional extra).

    Put it first among the bases, before our variant of the same function:
    the learned weights, float64 reference, FLOPs and state are that
    variant's. `package` is the import name, `extra` attnbench's extra.
    """

    devices = ("cuda",)
    dtypes = ("float32", "float16", "bfloat16")
    package = ""
    extra = ""
    device_reason = "is a CUDA kernel (Triton or CUDA C) from an optional extra; it has no CPU implementation"

    def execution(self, case: Case) -> None:
        return None                                                       # one way: the package's kernel

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if importlib.util.find_spec(self.package) is None:
            reasons.append(f"needs the package {self.package!r} (pip install 'attnbench[{self.extra}]')")
        return reasons


class FlaRecurrence(CudaExtra):
    """flash-linear-attention's chunk kernel for a recurrence (head_first=False layout), whole sequences.

    A subclass names its kernel (`kernel_path`, "module:function", imported in `prepare`) and the
    function from our q, k, v and weights to the kernel's keyword arguments (`fla_arguments`).
    """

    package, extra = "fla", "fla"
    kernel_path: ClassVar[str] = ""
    fla_arguments: ClassVar[Callable[..., dict]]

    def kernel(self):
        """The fla function named by `kernel_path`, imported on first use (fla imports Triton)."""
        module, _, function = self.kernel_path.partition(":")
        return getattr(importlib.import_module(module), function)

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.kv_len != case.seq_len:
            reasons.append("runs whole sequences here (the decode step is attnbench's own variant's)")
        return reasons

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        weights = self.mixer_weights(case, inputs, q.dtype)
        kernel = self.kernel()

        def forward() -> torch.Tensor:
            return kernel(**self.fla_arguments(q, k, v, weights))[0].transpose(1, 2)   # (B, T, H, d_v) -> (B, H, N, d_v)

        return forward

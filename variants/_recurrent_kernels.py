"""The chunked recurrences' C kernels, where nothing is traced: retnet, gla and the delta rules whole, one chain.

`recurrent_kernels.c` (built once per machine by `native_library`) walks each
sequence·head's chain of chunks on its own thread:

    diagonal_chain  S_{j+1} = a_j ⊙ S_j + B_j    (a_j scales S's rows: gla's and retnet's torch forms,
                                                   where their gates are too steep for the form in C)

and whole chunked forwards, each thread walking whole sequence·heads chunk by
chunk with the state and every per-chunk matrix in its own cache: linear
attention with per-channel decays (`gated_forward_native`: GLA, and RetNet as
its constant-gate case) and the delta rule (`delta_forward_native`: DeltaNet
and Gated DeltaNet, the UT transform within each chunk).

In torch each step of that loop is a batched matmul or multiply-add over a
few small matrices, which costs more in per-call overhead than in
arithmetic. The callers keep their torch loop for autograd, for CUDA, and
where the library could not be built (`native_chain().reason` says why).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from attnbench import NativeLibrary, c_arguments, native_library

CHAIN_SOURCE = Path(__file__).with_name("recurrent_kernels.c")


def rows_per_block(element_bytes: int) -> int:
    """The output rows of one register tile of recurrent_kernels.c's products (its ROWS): 8 floats, 4 doubles."""
    return 4 if element_bytes == 8 else 8


def chunk_lengths(seq_len: int, chunk: int) -> tuple[tuple[int, int], ...]:
    """(steps, how many chunks have them): the whole chunks, and the last one cut at seq_len where there is one."""
    whole, rest = divmod(seq_len, chunk)
    return ((chunk, whole), (rest, 1)) if rest else ((chunk, whole),)


def lower_product_terms(rows: int, block: int) -> int:
    """The inner-dimension terms recurrent_kernels.c's product reads for a lower-triangular A of `rows` rows (per
    output column): each whole block of `block` rows reads the columns up to its last row, the rows past the
    last whole block one at a time up to their own."""
    blocks = rows // block
    return block * block * blocks * (blocks + 1) // 2 + sum(range(blocks * block + 1, rows + 1))


def native_chain() -> NativeLibrary:
    """recurrent_kernels.c built for this machine (once per machine, loaded once per process), or why not."""
    return native_library(CHAIN_SOURCE)


def chain_runs_native(*tensors: torch.Tensor) -> bool:
    """Whether recurrent_kernels.c takes these tensors (its forwards and its chain alike): on the CPU, float32 or
    float64, and the library built (the caller checks that autograd records nothing)."""
    return all(t.device.type == "cpu" and native_chain().takes(t.dtype) for t in tensors)


def _threads() -> int:
    return torch.get_num_threads()


def _work(like: torch.Tensor, size_function: str, *sizes: int) -> torch.Tensor:
    """A forward's work area: one thread's share, as the C source's `size_function` counts it, for each thread."""
    per_thread = getattr(native_chain().library, size_function)
    per_thread.restype = ctypes.c_int64
    return like.new_empty(_threads() * per_thread(*c_arguments(*sizes)))


def _check(status: int, kernel: str, **sizes: int) -> None:
    if status:
        raise ValueError(f"recurrent_kernels.c's {kernel} refused the sizes "
                         f"{', '.join(f'{k}={v}' for k, v in sizes.items())} (status {status})")


def _expect(name: str, t: torch.Tensor, shape: tuple[int, ...], against: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"recurrent_kernels.c: {name} {tuple(t.shape)} does not match {against}; "
                         f"expected {name} {shape}")


def chain_native(a: torch.Tensor, b: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S_j+1 = a_j ⊙ S_j + B_j: the states entering every chunk (items, c, d_k, d_v) and the state after the last.

    b (items, c, d_k, d_v); a (items, c, d_k), each a_j scaling the rows of S_j; first (items, d_k, d_v) enters
    chunk 0. All of one dtype (float32 or float64), on the CPU.
    """
    items, chunks, key_dim, value_dim = b.shape
    against = f"b {tuple(b.shape)}"
    _expect("a", a, (items, chunks, key_dim), against)
    _expect("first", first, (items, key_dim, value_dim), against)
    a, b, first = (t.contiguous() for t in (a, b, first))
    entering, final = torch.empty_like(b), torch.empty_like(first)
    kernel = native_chain().kernel("diagonal_chain", b.dtype)
    _check(kernel(*c_arguments(a, b, first, entering, final, items, chunks, key_dim, value_dim, _threads())),
           "diagonal_chain", items=items, chunks=chunks, d_k=key_dim, d_v=value_dim)
    return entering, final


def _sequence_operands(q, k, v, state, **per_step):
    """The operands both forwards share, checked against q (B, H, N, d_k) and made contiguous: q, k, v, the
    entering state (or None), the per-step tensors given by name (each (B, H, N, ·) as its shape says, or None),
    and the fresh out (B, H, N, d_v) and final state (B, H, d_k, d_v)."""
    batch, heads, seq_len, key_dim = q.shape
    value_dim = v.shape[-1]
    against = f"q {tuple(q.shape)}"
    _expect("k", k, tuple(q.shape), against)
    _expect("v", v, (batch, heads, seq_len, value_dim), against)
    if state is not None:
        _expect("state", state, (batch, heads, key_dim, value_dim), against)
    for name, (t, shape) in per_step.items():
        if t is not None:
            _expect(name, t, (batch, heads, seq_len, *shape), against)
    q, k, v, state = (None if t is None else t.contiguous() for t in (q, k, v, state))
    steps = {name: None if t is None else t.contiguous() for name, (t, _) in per_step.items()}
    out, final = v.new_empty(batch, heads, seq_len, value_dim), v.new_empty(batch, heads, key_dim, value_dim)
    return q, k, v, state, steps, out, final


def delta_forward_native(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                         log_alpha: torch.Tensor | None, chunk: int,
                         state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule's whole chunked forward in C (`delta_forward` in recurrent_kernels.c): o (B, H, N, d_v) and
    the final state (B, H, d_k, d_v).

    S_t = α_t (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t and o_t = q_t S_t, by chunks of `chunk` steps (the UT
    transform within each, the state carried between them). q, k (B, H, N, d_k), as the rule reads them
    (L2-normalised, q scaled); v (B, H, N, d_v); beta (B, H, N); log_alpha (B, H, N), or None for α = 1
    (DeltaNet); state (B, H, d_k, d_v) enters the first chunk (None: zeros). All of one dtype (float32 or
    float64), on the CPU.
    """
    batch, heads, seq_len, key_dim = q.shape
    value_dim = v.shape[-1]
    q, k, v, state, steps, out, final = _sequence_operands(q, k, v, state, beta=(beta, ()), log_alpha=(log_alpha, ()))
    work = _work(q, "delta_forward_work", chunk, key_dim, value_dim)
    kernel = native_chain().kernel("delta_forward", q.dtype)
    _check(kernel(*c_arguments(q, k, v, steps["beta"], steps["log_alpha"], state, out, final, work, batch * heads,
                               seq_len, chunk, key_dim, value_dim, _threads())),
           "delta_forward", sequences=batch * heads, seq_len=seq_len, chunk=chunk, d_k=key_dim, d_v=value_dim)
    return out, final


def gated_forward_native(logits: torch.Tensor | None, bias: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                         v: torch.Tensor, normalizer: float, chunk: int, steepest: float,
                         state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Linear attention with per-channel decays, S_t = diag(α_t) S_{t−1} + k_tᵀ v_t and o_t = q_t S_t, in chunks
    of `chunk` steps, wholly in C (`gated_forward` in recurrent_kernels.c): o (B, H, N, d_v) and the final
    state (B, H, d_k, d_v), or None where a chunk's gates are steeper than `steepest` (the largest |log α|
    one block per chunk keeps finite; the caller then runs its sub-blocks).

    GLA: log α = logsigmoid(logits + bias) / normalizer, logits (B, H, N, d_k). RetNet: logits None and
    log α = bias, constant along the sequence. bias (H, 1, d_k) or (H, d_k); q, k (B, H, N, d_k); v (B, H, N,
    d_v); state (B, H, d_k, d_v) enters the first chunk (None: zeros). All of one dtype (float32 or float64),
    on the CPU.
    """
    batch, heads, seq_len, key_dim = q.shape
    value_dim = v.shape[-1]
    _expect("bias", bias.reshape(-1, key_dim), (heads, key_dim), f"q {tuple(q.shape)}")
    q, k, v, state, steps, out, final = _sequence_operands(q, k, v, state, logits=(logits, (key_dim,)))
    bias = bias.reshape(heads, key_dim).contiguous()
    work = _work(q, "gated_forward_work", chunk, key_dim)
    kernel = native_chain().kernel("gated_forward", q.dtype)
    real = ctypes.c_float if q.dtype == torch.float32 else ctypes.c_double
    status = kernel(*c_arguments(steps["logits"], bias, q, k, v, state, real(normalizer), real(steepest), out, final,
                                 work, batch * heads, heads, seq_len, chunk, key_dim, value_dim, _threads()))
    if status == 2:
        return None
    _check(status, "gated_forward", sequences=batch * heads, seq_len=seq_len, chunk=chunk, d_k=key_dim,
           d_v=value_dim)
    return out, final

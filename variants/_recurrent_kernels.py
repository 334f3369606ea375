"""The chunked recurrences' C kernels, where nothing is traced: the state entering every chunk, GLA's factors.

`recurrent_kernels.c` (built once per machine by `native_library`) walks each
sequence·head's chain of chunks on its own thread:

    delta_chain     U'_j = U_j − W_j S_j, S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j   (the delta rules)
    diagonal_chain  S_{j+1} = a_j ⊙ S_j + B_j                        (gla, retnet; a_j scales S's rows)

and GLA's gate factors (`gla_factors_native`), the gates, their sums within
each chunk and q, k scaled by them in one pass where torch makes eleven.

In torch each step of that loop is a batched matmul or multiply-add over a
few small matrices, which costs more in per-call overhead than in
arithmetic. The callers keep their torch loop for autograd, for CUDA, and
where the library could not be built (`native_chain().reason` says why).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch

from attnbench import NativeLibrary, native_library

CHAIN_SOURCE = Path(__file__).with_name("recurrent_kernels.c")
SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}


def native_chain() -> NativeLibrary:
    """recurrent_kernels.c built for this machine (once per machine, loaded once per process), or why not."""
    return native_library(CHAIN_SOURCE)


def chain_runs_native(*tensors: torch.Tensor) -> bool:
    """Whether the C chain takes these tensors: on the CPU, float32 or float64, and the library built (the caller
    checks that autograd records nothing)."""
    return (all(t.device.type == "cpu" and t.dtype in SUFFIXES for t in tensors)
            and native_chain().available)


def _pointers(*tensors: torch.Tensor | None) -> list[ctypes.c_void_p]:
    return [ctypes.c_void_p(None if t is None else t.data_ptr()) for t in tensors]


def _sizes(*sizes: int) -> list[ctypes.c_int64]:
    return [ctypes.c_int64(n) for n in (*sizes, torch.get_num_threads())]


def _check(status: int, kernel: str, **sizes: int) -> None:
    if status:
        raise ValueError(f"recurrent_kernels.c's {kernel} refused the sizes "
                         f"{', '.join(f'{k}={v}' for k, v in sizes.items())} (status {status})")


def _expect(name: str, t: torch.Tensor, shape: tuple[int, ...], against: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"state chain: {name} {tuple(t.shape)} does not match {against}; expected {name} {shape}")


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
    kernel = getattr(native_chain().library, f"diagonal_chain_{SUFFIXES[b.dtype]}")
    _check(kernel(*_pointers(a, b, first, entering, final), *_sizes(items, chunks, key_dim, value_dim)),
           "diagonal_chain", items=items, chunks=chunks, d_k=key_dim, d_v=value_dim)
    return entering, final


def delta_chain_native(wu: torch.Tensor, k: torch.Tensor, to_end: torch.Tensor | None, decay: torch.Tensor | None,
                       first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The delta rule's chain, U'_j = U_j − W_j S_j and S_j+1 = Γ_j S_j + K̃_jᵀ U'_j with K̃ = K ∘ γ: the states
    entering every chunk (items, c, d_k, d_v), the state after the last (items, d_k, d_v) and U' (items, c, Q, d_v).

    wu (items, c, Q, d_k + d_v): W and U side by side, as one product T [K Γ_t | V] gives them; k (items, c,
    Q, d_k); to_end (items, c, Q), γ, the decay from each step to its chunk's end, and decay (items, c), Γ_j,
    or None for 1; first (items, d_k, d_v). All of one dtype (float32 or float64), on the CPU.
    """
    items, chunks, chunk, key_dim = k.shape
    value_dim = first.shape[-1]
    against = f"k {tuple(k.shape)}"
    _expect("first", first, (items, key_dim, value_dim), against)
    _expect("wu", wu, (items, chunks, chunk, key_dim + value_dim), against)
    optional = {"to_end": (to_end, (items, chunks, chunk)), "decay": (decay, (items, chunks))}
    for name, (t, shape) in optional.items():
        if t is not None:
            _expect(name, t, shape, against)
    wu, k, first = (t.contiguous() for t in (wu, k, first))
    to_end, decay = (None if t is None else t.contiguous() for t in (to_end, decay))
    entering = k.new_empty(items, chunks, key_dim, value_dim)
    final, u_new = torch.empty_like(first), k.new_empty(items, chunks, chunk, value_dim)
    kernel = getattr(native_chain().library, f"delta_chain_{SUFFIXES[k.dtype]}")
    _check(kernel(*_pointers(wu, k, to_end, decay, first, entering, final, u_new),
                  *_sizes(items, chunks, chunk, key_dim, value_dim)),
           "delta_chain", items=items, chunks=chunks, chunk=chunk, d_k=key_dim, d_v=value_dim)
    return entering, final, u_new


@dataclass(frozen=True)
class GlaFactors:
    """GLA's per-chunk factors for one block per chunk (see `gla_chunked`): q_mid, k_mid, q_start, k_end
    (B, H, c, Q, d_k), end_decay e^(b_end) (B, H, c, d_k), and the largest |log α| of any step (`steepest`)."""

    q_mid: torch.Tensor
    k_mid: torch.Tensor
    q_start: torch.Tensor
    k_end: torch.Tensor
    end_decay: torch.Tensor
    steepest: float


def gla_factors_native(logits: torch.Tensor, bias: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                       normalizer: float, chunk: int) -> GlaFactors:
    """GLA's gates and per-chunk factors in one C pass: log α = logsigmoid(logits + bias) / normalizer, its
    cumulative sums within chunks of `chunk` steps, and q, k scaled about each chunk's middle and ends.

    logits, q, k (B, H, N, d_k); bias (H, 1, d_k) or (H, d_k). Rows past N (the last chunk's padding) get
    q = k = 0 and no decay, as `chunked_view` pads them.
    """
    batch, heads, seq_len, key_dim = q.shape
    for name, t in (("logits", logits), ("k", k)):
        _expect(name, t, tuple(q.shape), f"q {tuple(q.shape)}")
    _expect("bias", bias.reshape(-1, key_dim), (heads, key_dim), f"q {tuple(q.shape)}")
    logits, q, k = (t.contiguous() for t in (logits, q, k))
    bias = bias.reshape(heads, key_dim).contiguous()
    chunks = -(-seq_len // chunk)
    threads = torch.get_num_threads()
    factors = [q.new_empty(batch, heads, chunks, chunk, key_dim) for _ in range(4)]
    end_decay = q.new_empty(batch, heads, chunks, key_dim)
    steepest = q.new_empty(batch * heads * chunks)
    work = q.new_empty(threads * (chunk + 5) * key_dim)
    kernel = getattr(native_chain().library, f"gla_factors_{SUFFIXES[q.dtype]}")
    real = ctypes.c_float if q.dtype == torch.float32 else ctypes.c_double
    _check(kernel(*_pointers(logits, bias, q, k), real(normalizer), *_pointers(*factors, end_decay, steepest, work),
                  *_sizes(batch * heads, heads, seq_len, chunks, chunk, key_dim)),
           "gla_factors", sequences=batch * heads, seq_len=seq_len, chunk=chunk, d_k=key_dim)
    return GlaFactors(*factors, end_decay, float(steepest.max()))

"""The chunked recurrences' loop over chunks in C: the state entering every chunk, where nothing is traced.

`state_chain.c` (built once per machine by `native_library`) walks each
sequence·head's chain of chunks on its own thread:

    delta_chain     U'_j = U_j − W_j S_j, S_{j+1} = Γ_j S_j + K̃_jᵀ U'_j   (the delta rules)
    diagonal_chain  S_{j+1} = a_j ⊙ S_j + B_j                        (gla, retnet; a_j scales S's rows)

In torch each step of that loop is a batched matmul or multiply-add over a
few small matrices, which costs more in per-call overhead than in
arithmetic. The callers keep their torch loop for autograd, for CUDA, and
where the library could not be built (`native_chain().reason` says why).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from attnbench import NativeLibrary, native_library

CHAIN_SOURCE = Path(__file__).with_name("state_chain.c")
SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}


def native_chain() -> NativeLibrary:
    """state_chain.c built for this machine (once per machine, loaded once per process), or why not."""
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
        raise ValueError(f"state_chain.c's {kernel} refused the sizes "
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


def delta_chain_native(w: torch.Tensor, u: torch.Tensor, k_end: torch.Tensor, decay: torch.Tensor | None,
                       first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The delta rule's chain, U'_j = U_j − W_j S_j and S_j+1 = Γ_j S_j + K̃_jᵀ U'_j: the states entering every
    chunk (items, c, d_k, d_v), the state after the last (items, d_k, d_v) and U' (items, c, Q, d_v).

    w, k_end (items, c, Q, d_k); u (items, c, Q, d_v); decay (items, c), Γ_j, or None for 1; first (items, d_k,
    d_v). All of one dtype (float32 or float64), on the CPU.
    """
    items, chunks, chunk, key_dim = w.shape
    value_dim = u.shape[-1]
    against = f"w {tuple(w.shape)}"
    _expect("u", u, (items, chunks, chunk, value_dim), against)
    _expect("k_end", k_end, tuple(w.shape), against)
    _expect("first", first, (items, key_dim, value_dim), against)
    if decay is not None:
        _expect("decay", decay, (items, chunks), against)
        decay = decay.contiguous()
    w, u, k_end, first = (t.contiguous() for t in (w, u, k_end, first))
    entering = w.new_empty(items, chunks, key_dim, value_dim)
    final, u_new = torch.empty_like(first), torch.empty_like(u)
    kernel = getattr(native_chain().library, f"delta_chain_{SUFFIXES[w.dtype]}")
    _check(kernel(*_pointers(w, u, k_end, decay, first, entering, final, u_new),
                  *_sizes(items, chunks, chunk, key_dim, value_dim)),
           "delta_chain", items=items, chunks=chunks, chunk=chunk, d_k=key_dim, d_v=value_dim)
    return entering, final, u_new

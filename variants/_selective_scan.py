"""Mamba-1's selective scan without autograd: in order along time, every channel and state at once.

    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t   (B, D, n)      y_t = h_t C_t   (B, D)

Two exact ways. On the CPU, `selective_scan_native` calls the C scan in
`selective_scan.c` (built once per machine by `native_library`): one pass
over time per block of 16 channels, the block's state held in L1, the
output and the D skip written straight into (B, H, N, P). On CUDA, or where
no C compiler is found, `selective_scan_blocks` runs compiled time blocks.

The compiled blocks: the work is cut along time into blocks of T steps
and each block is one torch.compile-fused kernel over all (B, D, n) pairs: it
takes the state entering the block, runs its T steps (each pair's state
stays in registers, exp(Δ_t A) is formed once per step and pair) and returns
the T outputs and the state leaving it. Only that (B, D, n) state crosses
from one block to the next; nothing of size (N, D, n) is ever held. The
kernel's shapes do not depend on seq_len (the sequence is padded to whole
blocks with Δ = 0: decay 1, no input, the state passes unchanged), so one
compile serves every length.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from attnbench import NativeLibrary, native_library


def scan_block(h, delta, drive_x, b, c, a):
    """T steps from state h (B, D, n): delta, drive_x (B, T, D); b, c (B, T, n); a (D, n) → y (B, T, D), h."""
    outputs = []
    for t in range(delta.shape[1]):
        h = torch.exp(delta[:, t, :, None] * a) * h + drive_x[:, t, :, None] * b[:, t, None, :]
        outputs.append((h * c[:, t, None, :]).sum(-1))                    # (B, D)
    return torch.stack(outputs, dim=1), h


@lru_cache(maxsize=1)
def _compiled_block():
    return torch.compile(scan_block, dynamic=False)


def selective_scan_blocks(delta, x, b, c, a, steps: int) -> torch.Tensor:
    """y (B, N, D) by blocks of `steps` time steps, each one compiled kernel. Inputs float32 or float64."""
    batch, seq_len, inner = x.shape
    blocks = -(-seq_len // steps)
    pad = blocks * steps - seq_len

    def blocked(t):                                                       # (B, N, F) -> (blocks, B, T, F)
        t = torch.nn.functional.pad(t, (0, 0, 0, pad))
        return t.view(batch, blocks, steps, t.shape[-1]).transpose(0, 1).contiguous()

    delta_b, drive_b, b_b, c_b = blocked(delta), blocked(delta * x), blocked(b), blocked(c)
    block_fn = _compiled_block()
    h = x.new_zeros(batch, inner, a.shape[-1])                            # (B, D, n)
    outputs = []
    for i in range(blocks):
        y, h = block_fn(h, delta_b[i], drive_b[i], b_b[i], c_b[i], a)
        outputs.append(y)
    return torch.cat(outputs, dim=1)[:, :seq_len]


# ---------------------------------------------------------------- the native C scan (CPU, no autograd)

SCAN_SOURCE = Path(__file__).with_name("selective_scan.c")
LANES = 16                                                                # channels per vector block in the C source
NATIVE_KERNELS = {torch.float32: "selective_scan_f32", torch.float64: "selective_scan_f64"}


def native_scan() -> NativeLibrary:
    """selective_scan.c built for this machine (once per machine, loaded once per process), or why not."""
    return native_library(SCAN_SOURCE)


def _pointer(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _strides(t: torch.Tensor) -> ctypes.Array:
    """(batch, head, time) strides of a (B, H, N, P) tensor, as the C kernel reads them."""
    return (ctypes.c_int64 * 3)(t.stride(0), t.stride(1), t.stride(2))


def selective_scan_native(delta, v, b, c, a, d_skip, threads: int | None = None) -> torch.Tensor:
    """y_t = h_t C_t + D ⊙ x_t as (B, H, N, P), x read from v (B, H, N, P): the C scan, one pass over time.

    delta (B, N, D), b and c (B, N, n), a (D, n) and d_skip (D) in v's dtype (float32 or float64), on the CPU,
    with channel = head·P + p. Where P is not a multiple of the kernel's 16 lanes, every channel is laid out
    as one padded head (a copy); padded channels have Δ = 0 and x = 0 and are cut off.
    """
    batch, heads, seq_len, head_dim = v.shape
    inner, state_dim = a.shape
    kernel = getattr(native_scan().library, NATIVE_KERNELS[v.dtype])
    aligned = head_dim % LANES == 0 and v.stride(-1) == 1
    if aligned:
        x_layout, width = v, head_dim
    else:
        pad = -inner % LANES
        x_layout = torch.nn.functional.pad(v.transpose(1, 2).reshape(batch, seq_len, inner), (0, pad))[:, None]
        delta = torch.nn.functional.pad(delta, (0, pad))
        a = torch.nn.functional.pad(a, (0, 0, 0, pad), value=-1.0)
        d_skip = torch.nn.functional.pad(d_skip, (0, pad))
        width = inner + pad
    y = torch.empty(x_layout.shape, dtype=v.dtype)                       # (B, H, N, P) or (B, 1, N, D')
    delta, b, c = delta.contiguous(), b.contiguous(), c.contiguous()
    a_t, d_skip = a.t().contiguous(), d_skip.contiguous()                 # (n, D), (D)
    status = kernel(_pointer(delta), _pointer(x_layout), _pointer(b), _pointer(c), _pointer(a_t),
                    _pointer(d_skip), _pointer(y), ctypes.c_int64(batch), ctypes.c_int64(seq_len),
                    ctypes.c_int64(a_t.shape[1]), ctypes.c_int64(state_dim), ctypes.c_int64(width),
                    _strides(x_layout), _strides(y), ctypes.c_int64(threads or torch.get_num_threads()))
    if status:
        raise ValueError(f"selective_scan.c refused its arguments (status {status}): head width {width}, "
                         f"state {state_dim} (at most 256)")
    if aligned:
        return y
    return y[:, 0, :, :inner].view(batch, seq_len, heads, head_dim).transpose(1, 2).contiguous()

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from attnbench import NativeLibrary, c_arguments, native_library


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


# ---------------------------------------------------------------- the native C scan (CPU, with its backward)

SCAN_SOURCE = Path(__file__).with_name("selective_scan.c")
LANES = 16                                                                # channels per vector block in the C source
CHECKPOINT = 16                                                           # steps between the backward's stored states


def native_scan() -> NativeLibrary:
    """selective_scan.c built for this machine (once per machine, loaded once per process), or why not."""
    return native_library(SCAN_SOURCE)


def _strides(t: torch.Tensor) -> ctypes.Array:
    """(batch, head, time) strides of a (B, H, N, P) tensor, as the C kernel reads them."""
    return (ctypes.c_int64 * 3)(t.stride(0), t.stride(1), t.stride(2))


@dataclass(frozen=True)
class _Channels:
    """The channels as the C scan reads them: v's own heads when they are whole lane blocks, else one padded head."""

    aligned: bool
    inner: int                                                            # D = heads·head_dim
    width: int                                                            # the kernel's head width P'
    delta: torch.Tensor                                                   # (B, N, D'), contiguous

    @classmethod
    def of(cls, delta: torch.Tensor, v: torch.Tensor) -> _Channels:
        batch, heads, seq_len, head_dim = v.shape
        inner = heads * head_dim
        if head_dim % LANES == 0:
            return cls(True, inner, head_dim, delta.contiguous())
        pad = -inner % LANES
        return cls(False, inner, inner + pad, torch.nn.functional.pad(delta, (0, pad)).contiguous())

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """A (B, H, N, P) tensor in the kernel's layout: itself (last dim contiguous), or one padded head."""
        if self.aligned:
            return t if t.stride(-1) == 1 else t.contiguous()
        batch, _, seq_len, _ = t.shape
        return self.padded(t.transpose(1, 2).reshape(batch, seq_len, self.inner))[:, None]

    def padded(self, t: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """A channel vector (…, D) padded with `value` to the kernel's (…, D')."""
        return t if self.aligned else torch.nn.functional.pad(t, (0, self.width - self.inner), value=value)

    def channels(self, t: torch.Tensor) -> torch.Tensor:
        """A (…, D') channel vector without its padding: (…, D)."""
        return t[..., :self.inner]

    def back_to_heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        """The kernel's (B, 1, N, D') or (B, N, D') layout as (B, H, N, P)."""
        batch, seq_len = t.shape[0], t.shape[-2]
        flat = self.channels(t).reshape(batch, seq_len, self.inner)
        return flat.view(batch, seq_len, heads, self.inner // heads).transpose(1, 2)

    def decays(self, a: torch.Tensor) -> torch.Tensor:
        """A (D, n) as (n, D'), padded channels decaying (their Δ is 0, so they never move)."""
        return self.padded(a.t(), value=-1.0).contiguous()


def _threads(threads: int | None) -> int:
    return max(1, threads or torch.get_num_threads())


def _scan_forward(delta, v, b, c, a, d_skip, threads=None) -> torch.Tensor:
    """y + D ⊙ x as (B, H, N, P) by the C forward."""
    batch, heads, seq_len, _ = v.shape
    state_dim = a.shape[1]
    layout = _Channels.of(delta, v)
    x = layout.heads(v)
    y = torch.empty(x.shape, dtype=v.dtype)
    a_t, b, c, skip = layout.decays(a), b.contiguous(), c.contiguous(), layout.padded(d_skip).contiguous()
    kernel = native_scan().kernel("selective_scan", v.dtype)
    _check(kernel(*c_arguments(layout.delta, x, b, c, a_t, skip, y, batch, seq_len, a_t.shape[1], state_dim,
                               layout.width, _strides(x), _strides(y), _threads(threads))), layout.width, state_dim)
    return y if layout.aligned else layout.back_to_heads(y, heads).contiguous()


def _scan_backward(delta, v, b, c, a, dy, threads=None):
    """∂Δ (B, N, D), ∂x as (B, H, N, P), ∂B, ∂C (B, N, n) and ∂A (D, n) of the scan alone (no skip)."""
    batch, heads, seq_len, _ = v.shape
    state_dim = a.shape[1]
    threads = _threads(threads)
    layout = _Channels.of(delta, v)
    x, dy = layout.heads(v), layout.heads(dy)
    a_t, b, c = layout.decays(a), b.contiguous(), c.contiguous()
    d_delta = torch.empty_like(layout.delta)
    d_x = torch.empty_like(layout.delta)
    d_b = torch.zeros(threads, *b.shape, dtype=v.dtype)
    d_c = torch.zeros(threads, *c.shape, dtype=v.dtype)
    d_a = torch.zeros(threads, *a_t.shape, dtype=v.dtype)
    spans = -(-seq_len // CHECKPOINT)
    workspace = torch.empty(threads * (spans + 2 * CHECKPOINT) * state_dim * LANES, dtype=v.dtype)
    kernel = native_scan().kernel("selective_scan_backward", v.dtype)
    _check(kernel(*c_arguments(layout.delta, x, b, c, a_t, dy, d_delta, d_x, d_b, d_c, d_a, workspace, batch,
                               seq_len, a_t.shape[1], state_dim, layout.width, _strides(x), _strides(dy), threads)),
           layout.width, state_dim)
    return (layout.channels(d_delta), layout.back_to_heads(d_x, heads), d_b.sum(0), d_c.sum(0),
            layout.channels(d_a.sum(0)).t())


def softplus_bias_native(z: torch.Tensor, bias: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """Δ = softplus(z + bias) in place over a contiguous z (…, D), bias (D), float32 or float64, no autograd:
    one vectorised pass (torch's softplus and the bias add are two)."""
    kernel = native_scan().kernel("softplus_bias", z.dtype)
    bias = bias.contiguous()
    kernel(*c_arguments(z, bias, z.numel() // z.shape[-1], z.shape[-1], _threads(threads)))
    return z


def _check(status: int, width: int, state_dim: int) -> None:
    if status:
        raise ValueError(f"selective_scan.c refused its arguments (status {status}): head width {width} "
                         f"(a multiple of {LANES}), state size {state_dim} (1 to 256)")


class _NativeScan(torch.autograd.Function):
    """The C scan with its C backward; the skip's two gradients are formed here."""

    @staticmethod
    def forward(ctx, delta, v, b, c, a, d_skip):
        ctx.save_for_backward(delta, v, b, c, a, d_skip)
        return _scan_forward(delta, v, b, c, a, d_skip)

    @staticmethod
    def backward(ctx, dy):
        delta, v, b, c, a, d_skip = ctx.saved_tensors
        batch, heads, seq_len, head_dim = v.shape
        d_delta, d_x, d_b, d_c, d_a = _scan_backward(delta, v, b, c, a, dy)
        skip = d_skip.view(1, heads, 1, head_dim)
        d_x = d_x + dy * skip                                             # y = … + D ⊙ x
        d_skip_grad = (dy * v).sum(dim=(0, 2)).reshape(-1)
        return d_delta, d_x, d_b, d_c, d_a, d_skip_grad


def selective_scan_native(delta, v, b, c, a, d_skip, threads: int | None = None) -> torch.Tensor:
    """y_t = h_t C_t + D ⊙ x_t as (B, H, N, P), x read from v (B, H, N, P): the C scan, one pass over time.

    delta (B, N, D), b and c (B, N, n), a (D, n) and d_skip (D) in v's dtype (float32 or float64), on the CPU,
    with channel = head·P + p. Under autograd the C backward gives every input's gradient. Where P is not a
    multiple of the kernel's 16 lanes, the channels are laid out as one padded head (a copy); padded
    channels have Δ = 0 and x = 0 and are cut off.
    """
    tensors = (delta, v, b, c, a, d_skip)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _NativeScan.apply(*tensors)
    return _scan_forward(*tensors, threads=threads)

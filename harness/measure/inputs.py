"""Seeded inputs for a case, and the float64 copies the reference sees.

The case's `inputs` axis says where the values come from: a seeded
distribution (`attnbench.measure.distributions`) or a safetensors file
(`attnbench.measure.input_files`).
"""

from __future__ import annotations

import torch

from attnbench.attention.tensors import torch_dtype
from attnbench.core.case import Case
from attnbench.core.variant import AttentionInputs
from attnbench.kinds.inputs import inputs_of


def make_inputs(case: Case, requires_grad: bool = False) -> AttentionInputs:
    """q (B, H, N, d), k (B, Hkv, M, d) and v (B, Hkv, M, d_v) of `case`, in its dtype on its device.

    ``iid`` draws q, k ~ N(0, qk_std²) and v ~ N(0, 1); the other
    distributions are described in `attnbench.measure.distributions`; ``file:PATH``
    loads the stored tensors. Values are made on the CPU in float32 (so they are
    the same on every device), then cast to the case's dtype and moved to its device.
    """
    if inputs_of(case).kind.reads_file:
        from attnbench.measure.input_files import load_file_inputs

        values = load_file_inputs(case)
    else:
        from attnbench.measure.distributions import draw_qkv

        values = draw_qkv(case)
    tensors = {name: value.to(device=case.device, dtype=torch_dtype(case.dtype)).requires_grad_(requires_grad)
               for name, value in zip(("q", "k", "v"), values, strict=True)}
    return AttentionInputs(**tensors)


def make_output_grad(case: Case, like: torch.Tensor) -> torch.Tensor:
    """The seeded upstream gradient used for every backward pass of a case."""
    generator = torch.Generator().manual_seed(case.seed + 104729)
    grad = torch.randn(like.shape, generator=generator, dtype=torch.float32)
    return grad.to(device=like.device, dtype=like.dtype)


def upcast(inputs: AttentionInputs, requires_grad: bool = False) -> AttentionInputs:
    """The same values in float64 on the CPU (detached), optionally tracking gradients."""
    return AttentionInputs(*(t.detach().to("cpu", torch.float64).requires_grad_(requires_grad)
                             for t in inputs.tensors()))

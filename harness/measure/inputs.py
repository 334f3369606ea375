"""Seeded inputs for a case, and the float64 copies the reference sees."""

from __future__ import annotations

import torch

from harness.attention.tensors import torch_dtype
from harness.core.case import Case
from harness.core.variant import AttentionInputs


def make_inputs(case: Case, requires_grad: bool = False) -> AttentionInputs:
    """q, k ~ N(0, qk_std^2) and v ~ N(0, 1), drawn on the CPU in float32 from `case.seed`.

    Drawing on the CPU makes the values the same on every device; they are
    then cast to the case's dtype and moved to its device.
    """
    generator = torch.Generator().manual_seed(case.seed)
    shapes = {
        "q": (case.batch, case.heads, case.seq_len, case.head_dim),
        "k": (case.batch, case.kv_heads, case.kv_len, case.head_dim),
        "v": (case.batch, case.kv_heads, case.kv_len, case.v_head_dim),
    }
    tensors = {}
    for name, shape in shapes.items():
        std = case.qk_std if name in ("q", "k") else 1.0
        values = torch.randn(shape, generator=generator, dtype=torch.float32) * std
        values = values.to(device=case.device, dtype=torch_dtype(case.dtype))
        tensors[name] = values.requires_grad_(requires_grad)
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

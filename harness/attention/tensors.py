"""Dtype names as torch dtypes."""

from __future__ import annotations

import torch

TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def torch_dtype(name: str) -> torch.dtype:
    """'bfloat16' -> torch.bfloat16 (names as in `harness.DTYPES`)."""
    return TORCH_DTYPES[name]

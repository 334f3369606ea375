"""Sigmoid attention for attnbench: an example of a variant shipped as its own package."""

from attnbench_sigmoid_attention.sigmoid import SigmoidAttention

__all__ = ["SigmoidAttention"]

"""Learned weights: the tensors a variant declares as its own weights (Mamba's Δ, B, C projections, A, D).

A variant lists them in `Variant.learned_weights(case)`, name -> `LearnedWeight`
(shape and initialiser, derived from the case and its knobs). Both kinds of
cell start from the same values:

- a kernel cell seeds them (`initial_weights`), exactly as a fixed weight is
  seeded: the case's seed and the weight's name fix the draw, so `prepare`
  and `reference` see the same tensor;
- a quality cell makes them parameters of the model (one set per layer) and
  trains them with everything else; a weight with ``decay=False`` (decay
  rates, A, skip gains, as Mamba does) is left out of AdamW's weight decay.

An initialiser is ``init(generator, shape) -> float64 tensor``; `normal`,
`uniform`, `log_uniform` and `constant` make the common ones. Pure Python
until called (torch is imported inside).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from attnbench.core.case import Case

Initializer = Callable[["torch.Generator", tuple[int, ...]], "torch.Tensor"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LearnedWeight:
    """One weight a variant learns: its shape, how it starts, and whether weight decay applies.

    shape: the tensor's shape (from the case and the knobs); init: an
    `Initializer` drawing the float64 starting value from a seeded generator;
    decay: False for decay rates, A and skip gains, which AdamW's weight
    decay would pull toward zero; doc: one line for readers.
    """

    shape: tuple[int, ...]
    init: Initializer
    decay: bool = True
    doc: str = ""


def normal(std: float, mean: float = 0.0) -> Initializer:
    """N(mean, std²)."""
    def draw(generator, shape):
        import torch

        return torch.randn(shape, generator=generator, dtype=torch.float64) * std + mean
    return draw


def uniform(low: float, high: float) -> Initializer:
    """U(low, high)."""
    def draw(generator, shape):
        import torch

        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return draw


def log_uniform(low: float, high: float) -> Initializer:
    """exp(U(log low, log high)): scales spread evenly over decades (Mamba's Δ)."""
    def draw(generator, shape):
        import torch

        return torch.exp(uniform(math.log(low), math.log(high))(generator, shape)).to(torch.float64)
    return draw


def constant(value: float) -> Initializer:
    """Every element `value` (draws nothing)."""
    def draw(generator, shape):
        import torch

        return torch.full(shape, float(value), dtype=torch.float64)
    return draw


def weight_generator(case: Case, name: str) -> torch.Generator:
    """The generator a weight's initial value is drawn from: fixed by the case's seed and the weight's name."""
    import torch

    return torch.Generator().manual_seed(case.seed * 1_000_003 + zlib.crc32(name.encode()) + 29)


def initial_weights(owner: str, case: Case, declared: Mapping[str, LearnedWeight], dtype: torch.dtype,
                    device=None) -> dict[str, torch.Tensor]:
    """Each declared weight's seeded starting value, rounded through the case's dtype, in `dtype` on `device`.

    Rounding through the case's dtype first makes the float64 reference see
    the values a float16 forward sees. ValueError names the variant and the
    weight when an initialiser returns another shape.
    """
    from attnbench.attention.tensors import torch_dtype

    weights = {}
    for name, weight in declared.items():
        value = weight.init(weight_generator(case, name), tuple(weight.shape))
        if tuple(value.shape) != tuple(weight.shape):
            raise ValueError(f"variant {owner!r}: the initialiser of learned weight {name!r} returned shape "
                             f"{tuple(value.shape)}, but the weight is declared {tuple(weight.shape)}")
        weights[name] = value.to(torch_dtype(case.dtype)).to(dtype).to(device)
    return weights


def check_declared(owner: str, declared: Mapping[str, LearnedWeight]) -> None:
    """ValueError naming the variant for a weight name that is not an identifier, or a shape that is not ints."""
    for name, weight in declared.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"variant {owner!r}: learned weight name {name!r} must be an identifier "
                             "(letters, digits, underscores)")
        if not isinstance(weight, LearnedWeight):
            raise ValueError(f"variant {owner!r}: learned weight {name!r} must be a LearnedWeight, "
                             f"not {type(weight).__name__}")
        if not all(isinstance(size, int) and size > 0 for size in weight.shape):
            raise ValueError(f"variant {owner!r}: learned weight {name!r} has shape {weight.shape!r}; "
                             "expected positive integers")


def given_weights(owner: str, declared: Mapping[str, LearnedWeight],
                  given: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights a caller (the trainer) passed in, checked against the declaration by name and shape."""
    missing, unknown = sorted(set(declared) - set(given)), sorted(set(given) - set(declared))
    if missing or unknown:
        raise ValueError(f"variant {owner!r}: given learned weights {sorted(given)}, declared {sorted(declared)} "
                         f"(missing: {missing or 'none'}, unknown: {unknown or 'none'})")
    for name, weight in declared.items():
        if tuple(given[name].shape) != tuple(weight.shape):
            raise ValueError(f"variant {owner!r}: learned weight {name!r} has shape {tuple(given[name].shape)}, "
                             f"declared {tuple(weight.shape)}")
    return dict(given)

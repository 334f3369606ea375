"""The variant contract: the public API a plugin implements.

A variant is an attention implementation (or a stand-in such as a state-space
scan) that the harness can run on a `Case`. Like an xformers operator it
*declares* what it supports and returns every reason it cannot run a case,
instead of failing at run time.

To add one, subclass `Variant`, fill in the class attributes, implement
`prepare`, `reference` and `flops` (and `memory_model` if you can), and
register the class under the entry point group ``attnbench.variants``::

    [project.entry-points."attnbench.variants"]
    my-attention = "my_package.module:MyAttention"

The entry point's name must equal the variant's `name`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.core.case import DTYPES, Case

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AttentionInputs:
    """The tensors a case runs on: q (B, H, N, d), k and v (B, H, M, d).

    The reference receives the same tensors upcast to float64.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.q, self.k, self.v)


class Variant:
    """Base class of every attention variant.

    Class attributes describe the variant; override the methods below.

    name: stable short name, as `attnbench list` shows it (``naive``, ``sdpa-flash``).
    family: the family it belongs to (``naive``, ``flash``, ``performer``...).
    computes: the mathematical function it implements (``softmax_attention``...).
    approximates: the exact function it stands in for, if any.
    params: its knobs with their defaults; a suite may sweep them.
    devices, dtypes: where and in which precisions it can run.
    supports_causal, supports_backward, supports_cross: whether it handles a
        causal mask, a backward pass, and kv_len != seq_len.
    reference_rows: whether `reference` can be evaluated on a subset of query
        rows (exact for functions where each output row depends only on its
        own query), which lets accuracy be checked at large seq_len.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    computes: ClassVar[str] = ""
    approximates: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Any]] = {}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[str, ...]] = DTYPES
    supports_causal: ClassVar[bool] = True
    supports_backward: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True
    reference_rows: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()

    def unsupported_reasons(self, case: Case) -> list[str]:
        """Every reason this variant cannot run `case`; empty when it can.

        Subclasses extend the list (call ``super().unsupported_reasons(case)``).
        Each reason is a sentence a user can act on.
        """
        reasons = [f"requires the package {pkg!r}, which is not installed (pip install {pkg})"
                   for pkg in self.requires if importlib.util.find_spec(pkg.replace("-", "_")) is None]
        if case.device not in self.devices:
            reasons.append(f"runs on {', '.join(self.devices)} only, not on {case.device}")
        elif case.device == "cuda" and not _cuda_available():
            reasons.append("needs a CUDA device, and torch sees none here")
        if case.dtype not in self.dtypes:
            reasons.append(f"supports dtypes {', '.join(self.dtypes)}, not {case.dtype}")
        if case.causal and not self.supports_causal:
            reasons.append("has no causal form")
        if case.mode == "fwd_bwd" and not self.supports_backward:
            reasons.append("has no backward pass (forward only)")
        if case.kv_len != case.seq_len and not self.supports_cross:
            reasons.append("needs kv_len == seq_len")
        unknown = sorted(set(case.params) - set(self.params))
        if unknown:
            reasons.append(f"has no knob {', '.join(unknown)} (knobs: {', '.join(self.params) or 'none'})")
        return reasons

    def supports(self, case: Case) -> bool:
        return not self.unsupported_reasons(case)

    def prepare(self, case: Case, inputs: AttentionInputs) -> Callable[[], torch.Tensor]:
        """Build everything outside the timed region and return the forward.

        Weights, masks, compiled kernels and layout conversions belong here.
        The returned zero-argument callable computes the output from
        `inputs` and returns it; the harness times it, and in ``fwd_bwd``
        mode runs the backward of its output itself. Weights a variant
        learns must be derived from ``case.seed`` (see `seeded_weight`), so
        `reference` can rebuild them.
        """
        raise NotImplementedError

    def reference(self, case: Case, inputs: AttentionInputs, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The float64 output of the function this variant computes.

        `inputs` are the case's own inputs upcast to float64. When `rows`
        is given (only if `reference_rows`), return just those query rows,
        in that order. Plain torch, no cleverness: a reader checks it
        against the formula.
        """
        raise NotImplementedError

    def flops(self, case: Case) -> int:
        """Useful forward FLOPs of this variant on `case` (a multiply-add is 2)."""
        raise NotImplementedError

    def memory_model(self, case: Case) -> int | None:
        """Analytic peak bytes the forward allocates beyond its inputs, or None if unknown."""
        return None

    def attention_weights(self, case: Case, inputs: AttentionInputs) -> torch.Tensor | None:
        """The (B, H, N, M) weights each query puts on each key, in float64, or None.

        For the report's attention maps, on small cases only. Variants with
        explicit weights (softmax, additive, Luong, Longformer) return them;
        kernel methods return their implicit weights φ(q)·φ(k) normalised per
        row; variants with no such matrix (state-space scans) return None.
        """
        return None

    def probe_case(self, device: str) -> Case:
        """A small case in this variant's first dtype on `device`, used by `attnbench list`."""
        dtype = "float32" if "float32" in self.dtypes else self.dtypes[0]
        return Case(variant=self.name, seq_len=128, head_dim=64, heads=2, dtype=dtype,
                    device=device, params=dict(self.params))


def seeded_weight(case: Case, tag: int, shape: tuple[int, ...], std: float = 1.0) -> torch.Tensor:
    """A float32 CPU tensor drawn from N(0, std**2), fixed by the case's seed and `tag`.

    Variants with learned weights draw them here in `prepare` and again in
    `reference`, so both see the same values.
    """
    import torch

    generator = torch.Generator().manual_seed(case.seed * 1_000_003 + 7919 * tag + 17)
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

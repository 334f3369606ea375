"""The `mask` axis of a case as text: ``none``, ``sliding_window:W``, ``document:K``, ``prefix_lm:P``.

Pure Python (no torch), so a `Case` can check its mask wherever it is built.
The predicates themselves are in `attnbench.attention.masks`; the names follow
attention-gym's.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import split_kind

MASK_KINDS = ("none", "sliding_window", "document", "prefix_lm")
MASK_HELP = ("none, sliding_window:W (each query sees the keys within W positions; with causal, the W "
             "before it), document:K (K documents of seeded random lengths; a query sees its own document), "
             "or prefix_lm:P (every query sees the first P keys, and the keys up to itself)")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask: its kind and its size (W, K or P; None for ``none``)."""

    kind: str = "none"
    size: int | None = None

    @property
    def text(self) -> str:
        return self.kind if self.size is None else f"{self.kind}:{self.size}"


def parse_mask(text: str) -> MaskSpec:
    """'sliding_window:256' -> MaskSpec('sliding_window', 256); ValueError saying what is accepted."""
    split = split_kind(text, "mask", MASK_KINDS, MASK_HELP)
    if split.kind == "none":
        split.bare(noun="size")
        return MaskSpec()
    value = split.whole(f"{split.kind}:{ {'sliding_window': 256, 'document': 4, 'prefix_lm': 128}[split.kind]}")
    minimum = 1 if split.kind == "document" else 0
    if value < minimum:
        raise split.error(f"the size must be at least {minimum}")
    split.no_options()
    return MaskSpec(split.kind, value)

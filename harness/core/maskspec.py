"""The `mask` axis of a case as text: ``none``, ``sliding_window:W``, ``document:K``, ``prefix_lm:P``.

Pure Python (no torch), so a `Case` can check its mask wherever it is built.
The predicates themselves are in `attnbench.attention.masks`; the names follow
attention-gym's.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    raw = str(text).strip()
    kind, sep, size = raw.partition(":")
    kind = kind.strip().lower()
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask {text!r}: expected {MASK_HELP}")
    if kind == "none":
        if sep:
            raise ValueError(f"mask 'none' takes no size, got {text!r}")
        return MaskSpec()
    try:
        value = int(size)
    except ValueError:
        raise ValueError(f"mask {text!r} needs a whole number after the colon, e.g. {kind}:"
                         f"{ {'sliding_window': 256, 'document': 4, 'prefix_lm': 128}[kind]}") from None
    minimum = 1 if kind == "document" else 0
    if value < minimum:
        raise ValueError(f"mask {text!r}: the size must be at least {minimum}")
    return MaskSpec(kind, value)

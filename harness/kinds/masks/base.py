"""What a mask kind gives: its predicate for a case, its visible pairs, its window, and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attnbench.core.kindtext import KindText
from attnbench.kinds.family import Kind
from attnbench.kinds.masks.predicates import MaskMod


@dataclass(frozen=True)
class MaskKind(Kind):
    """A kind of the `mask` axis; it combines with the case's `causal` flag."""

    def mask_mod(self, case, arg: Any, device=None) -> MaskMod | None:
        """The predicate of `case` (its causal flag and this mask) as a Flex ``mask_mod``; None when every key is visible."""
        raise NotImplementedError

    def visible_pairs(self, case, arg: Any) -> int:
        """The exact number of (query, key) pairs `case` lets through, without an (N, M) matrix."""
        raise NotImplementedError

    def window(self, arg: Any) -> int | None:
        """W for kernels that take a sliding window as a number; None for every other kind."""
        return None

    def check(self, case, arg: Any) -> None:
        """Raise ValueError when `case`'s shapes cannot take this mask."""


@dataclass(frozen=True)
class SizedMask(MaskKind):
    """A mask kind with one whole-number size after its colon (W, K or P); `short` starts its label (``sw256``)."""

    short: str = ""
    example: int = 0
    minimum: int = 0

    def read(self, split: KindText) -> int:
        value = split.whole(f"{self.name}:{self.example}")
        if value < self.minimum:
            raise split.error(f"the size must be at least {self.minimum}")
        split.no_options()
        return value

    def label(self, arg: int) -> str:
        return f"{self.short}{arg}"

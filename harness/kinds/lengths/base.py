"""What a lengths kind gives: each sequence's (query length, key length) in a batch, drawn seeded. Pure Python.

A lengths kind draws one key length per sequence (`draw`), from a generator
seeded with the case's seed; `sequences` clips each to [1, kv_len] (the case's
kv_len is the longest a sequence may be) and pairs it with its query length:
in prefill (seq_len == kv_len) a sequence's queries are its own tokens, so the
query length is the key length; in decode (seq_len < kv_len) each sequence has
seq_len new queries (fewer if its keys are fewer) against its own keys, causal
aligned at the end of them. A kind that sets both lengths itself (`mixed`)
overrides `sequences`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from attnbench.core.kindtext import KindText
from attnbench.kinds.family import Kind, number_text


def numbers(split: KindText, names: tuple[str, ...], example: str) -> tuple[float, ...]:
    """The comma-separated numbers after the colon, one per name in `names`; ValueError with `example` otherwise."""
    parts = [p.strip() for p in (split.arg or "").split(",")]
    if len(parts) != len(names) or not all(parts):
        raise split.error(f"needs {len(names)} numbers after the colon ({', '.join(names)}), e.g. {example}")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise split.error(f"{', '.join(names)} must be numbers, e.g. {example}") from None


def whole(value: float, name: str, split: KindText, minimum: int = 1) -> int:
    """`value` as a whole number of at least `minimum`; ValueError naming `name` otherwise."""
    if not float(value).is_integer() or value < minimum:
        raise split.error(f"{name} must be a whole number of at least {minimum}, got {number_text(value)}")
    return int(value)


@dataclass(frozen=True)
class LengthsKind(Kind):
    """A kind of the `lengths` axis. `draw` gives `count` key lengths from `rng`; the argument is a tuple."""

    def draw(self, arg: Any, count: int, rng: random.Random) -> list[int]:
        raise NotImplementedError

    def text(self, arg: Any) -> str:
        if arg is None:
            return self.name
        return f"{self.name}:" + ",".join(number_text(a) for a in arg)

    def label(self, arg: Any) -> str:
        return self.text(arg).replace(":", "").replace(",", "-")

    def sequences(self, arg: Any, batch: int, seq_len: int, kv_len: int, seed: int) -> tuple[tuple[int, int], ...]:
        """((query length, key length), ...) of the `batch` sequences, seeded with `seed`."""
        rng = random.Random(1_000_003 * seed + 17)
        keys = [min(kv_len, max(1, int(n))) for n in self.draw(arg, batch, rng)]
        if seq_len == kv_len:
            return tuple((n, n) for n in keys)
        return tuple((min(seq_len, n), n) for n in keys)

    def check(self, case, arg: Any) -> None:
        """Raise ValueError when `case`'s shapes cannot take these lengths."""

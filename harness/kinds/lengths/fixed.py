"""``fixed``: every sequence has the case's seq_len queries and kv_len keys (a dense batch, the default)."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.kinds.lengths.base import LengthsKind


@dataclass(frozen=True)
class Fixed(LengthsKind):
    def draw(self, arg, count, rng) -> list[int]:
        raise AssertionError("fixed lengths are not drawn")

    def sequences(self, arg, batch, seq_len, kv_len, seed):
        return tuple((seq_len, kv_len) for _ in range(batch))


FIXED = Fixed("fixed", "fixed (every sequence seq_len long: a dense batch)")

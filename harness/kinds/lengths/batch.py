"""A case's ragged batch: each sequence's query and key lengths, the offsets that pack them, and the work counts.

Pure Python (the report reads it without torch). The counts are pairs of
(query, key): a sequence of q queries and m keys has q·m pairs, or, causal
(aligned at the end of its keys), Σ_i min(m, i + 1 + m − q) of them.

- useful pairs: Σ over the sequences of their own pairs (what the FLOPs count);
- padding_waste: the pairs the layout computes over the real ones, counted on
  the rectangles: padded, B·N_max·M_max over Σ q_i·m_i (every sequence padded
  to the longest queries and keys); packed, 1 (no padding is formed);
- imbalance: the longest sequence's pairs over the mean's (1 for equal lengths),
  what a kernel that gives each sequence to one worker waits for.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.kinds.lengths import lengths_of
from attnbench.kinds.masks.predicates import visible_pairs


def sequence_pairs(queries: int, keys: int, causal: bool) -> int:
    """(query, key) pairs of one sequence: q·m, or with the end-aligned causal mask only j <= i + m − q."""
    return visible_pairs(queries, keys, causal=causal)


@dataclass(frozen=True)
class RaggedBatch:
    """The (query length, key length) of each sequence of a batch, and the counts derived from them."""

    queries: tuple[int, ...]
    keys: tuple[int, ...]
    causal: bool = False

    @property
    def size(self) -> int:
        return len(self.queries)

    @property
    def max_queries(self) -> int:
        return max(self.queries)

    @property
    def max_keys(self) -> int:
        return max(self.keys)

    @property
    def total_queries(self) -> int:
        return sum(self.queries)

    @property
    def total_keys(self) -> int:
        return sum(self.keys)

    @property
    def cu_seqlens_q(self) -> tuple[int, ...]:
        """Cumulative query offsets (B + 1,), 0 first: sequence s holds packed rows [cu[s], cu[s + 1])."""
        return _cumulative(self.queries)

    @property
    def cu_seqlens_k(self) -> tuple[int, ...]:
        """Cumulative key offsets (B + 1,), 0 first."""
        return _cumulative(self.keys)

    def pairs(self) -> tuple[int, ...]:
        """Each sequence's own (query, key) pairs (the causal mask applied)."""
        return tuple(sequence_pairs(q, m, self.causal) for q, m in zip(self.queries, self.keys, strict=True))

    def useful_pairs(self) -> int:
        return sum(self.pairs())

    def rectangle_pairs(self, layout: str) -> int:
        """The query-key rectangle `layout` computes: padded B·N_max·M_max, packed Σ q_i·m_i."""
        if layout == "padded":
            return self.size * self.max_queries * self.max_keys
        return sum(q * m for q, m in zip(self.queries, self.keys, strict=True))

    def padding_waste(self, layout: str) -> float:
        """The layout's rectangle over the real one: 1 for packed, B·N_max·M_max / Σ q_i·m_i for padded."""
        return self.rectangle_pairs(layout) / self.rectangle_pairs("packed")

    def least_bytes(self, heads: int, kv_heads: int, head_dim: int, v_head_dim: int, element_bytes: int) -> int:
        """The real tokens' q, k, v read once and output written once (padding is no data a call must move)."""
        q = heads * self.total_queries * head_dim
        kv = kv_heads * self.total_keys * (head_dim + v_head_dim)
        out = heads * self.total_queries * v_head_dim
        return (q + kv + out) * element_bytes

    def imbalance(self) -> float:
        """The longest sequence's pairs over the mean sequence's (1 for equal lengths)."""
        pairs = self.pairs()
        mean = sum(pairs) / len(pairs)
        return max(pairs) / mean if mean else 1.0


def _cumulative(lengths: tuple[int, ...]) -> tuple[int, ...]:
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return tuple(offsets)


def is_ragged(case) -> bool:
    """Whether `case` runs as a ragged batch: lengths other than fixed, or the packed layout."""
    return getattr(case, "lengths", "fixed") != "fixed" or getattr(case, "layout", "padded") != "padded"


def ragged_batch(case) -> RaggedBatch:
    """The batch `case` draws: its lengths kind's sequences, seeded with the case's seed (fixed: all equal)."""
    chosen = lengths_of(case)
    sequences = chosen.kind.sequences(chosen.arg, case.batch, case.seq_len, case.kv_len, case.seed)
    return RaggedBatch(tuple(q for q, _ in sequences), tuple(m for _, m in sequences), bool(case.causal))


def ragged_execution(case, one_call: bool = False) -> str | None:
    """How a ragged case runs, for `Variant.execution`: None for a dense case.

    ``padded``: one call over the padded batch; ``packed``: one call over the
    packed tokens when `one_call` (a kernel that takes the offsets), else one
    call per sequence (the sum of separate calls).
    """
    if not is_ragged(case):
        return None
    if case.layout == "padded":
        return "one call, padded to the longest and masked"
    return "one call over packed offsets" if one_call else "separate calls, one per sequence (packed tokens)"

"""``document:K``: K documents of seeded random lengths summing to seq_len; a query sees its own document.

With `causal`, only the keys of its document up to itself. Needs kv_len == seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.kinds.masks.base import SizedMask


def document_ids(seq_len: int, documents: int, seed: int = 0):
    """(N,) int64: the document of each position, K documents of seeded random lengths (each >= 1)."""
    import torch

    generator = torch.Generator().manual_seed(seed + 7919 * documents)
    cuts = torch.randperm(seq_len - 1, generator=generator)[:documents - 1] + 1      # K - 1 distinct boundaries
    starts = torch.zeros(seq_len, dtype=torch.int64)
    starts[cuts] = 1
    return starts.cumsum(0)


@dataclass(frozen=True)
class Document(SizedMask):
    def mask_mod(self, case, documents: int, device=None):
        ids = document_ids(case.seq_len, documents, case.seed).to(device)
        causal = case.causal

        def document(b, h, q_idx, kv_idx):
            same = ids[q_idx] == ids[kv_idx]
            return same & (kv_idx <= q_idx) if causal else same

        return document

    def visible_pairs(self, case, documents: int) -> int:
        lengths = document_ids(case.seq_len, documents, case.seed).bincount().tolist()
        return sum(length * (length + 1) // 2 if case.causal else length * length for length in lengths)

    def check(self, case, documents: int) -> None:
        if case.kv_len != case.seq_len or documents > case.seq_len:
            raise ValueError(f"mask {self.text(documents)} needs kv_len == seq_len and at most seq_len documents, "
                             f"got seq_len={case.seq_len}, kv_len={case.kv_len}")


DOCUMENT = Document("document", "document:K (K documents of seeded random lengths; a query sees its own document)",
                    short="doc", example=4, minimum=1)

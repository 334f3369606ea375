"""The geometry of a paged KV cache (the `page_size` axis), in pure Python: pages, padding, block-table bytes.

A sequence of kv_len keys fills ceil(kv_len / page_size) pages; the last one
may be partly empty. Its block table holds one int32 page number per page.
`attnbench.attention.paged` builds the pages and tables themselves (torch).
"""

from __future__ import annotations

BLOCK_TABLE_ENTRY_BYTES = 4                     # int32, as flash-attn's and vLLM's block tables


def pages_per_sequence(kv_len: int, page_size: int) -> int:
    """ceil(kv_len / page_size): the pages one sequence's keys fill."""
    if page_size < 1:
        raise ValueError(f"page_size must be a positive number of keys per page, got {page_size!r}")
    return -(-kv_len // page_size)


def paged_extra_bytes(case) -> int:
    """Bytes a paged decode step reads beyond a contiguous one: the last pages' empty slots and the block table.

    Every page is read whole: B·(P·page_size − kv_len) slots of k and v more
    than the keys, plus B·P int32 block-table entries. `case` has the shape
    fields of a `Case`.
    """
    pages = pages_per_sequence(case.kv_len, case.page_size)
    slot_bytes = case.kv_heads * (case.head_dim + case.v_head_dim) * case.element_bytes
    padding = case.batch * (pages * case.page_size - case.kv_len) * slot_bytes
    return padding + case.batch * pages * BLOCK_TABLE_ENTRY_BYTES

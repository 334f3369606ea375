"""Paged KV caches (the `page_size` axis): a seeded block table, the page pool, and the two ways to read it.

A paged cache keeps k and v in a pool of fixed-size pages, vLLM's and
flash-attn's layout: ``(num_pages, page_size, Hkv, d)``. Sequence b's logical
page p lives at physical page ``block_table[b, p]``, so its key j is

    pool[block_table[b, j // page_size], j % page_size]                    (Hkv, d)

The pool holds exactly the B·P pages of the batch (P = ceil(M / page_size));
the block table puts them in order, then moves the share `page_shuffle` of
them to seeded random places (fragmentation: 0 leaves every sequence's pages
consecutive, 1 scatters them over the whole pool, the pages of different
sequences interleaved). The empty slots of a sequence's last page are zeros.

A kernel either gathers the pages back into the logical (B, Hkv, M, d) view
in its timed forward (`gather_pages`: naive, sdpa, flash-decoding), reads the
pool in place through the table (flash-attn's ``block_table``), or attends to
the whole pool with a mask that maps each physical slot back to its sequence
and logical position (`page_owner_and_position`: Flex's paged path).
"""

from __future__ import annotations

import torch

from attnbench.core.paging import pages_per_sequence

PAGE_TAG = 6151


def block_table(batch: int, kv_len: int, page_size: int, shuffle: float, seed: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(B, P) int32: the physical page of each sequence's logical page; a permutation of 0..B·P−1.

    In order (b·P + p) but for round(shuffle·B·P) pages, drawn with a
    generator seeded by `seed`, that trade places by a random permutation.
    """
    pages = pages_per_sequence(kv_len, page_size)
    total = batch * pages
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * PAGE_TAG + page_size)
    physical = torch.arange(total)
    moved = torch.randperm(total, generator=generator)[:round(shuffle * total)]    # the pages out of order
    physical[moved] = moved[torch.randperm(len(moved), generator=generator)]
    return physical.view(batch, pages).to(torch.int32).to(device or "cpu")


def case_block_table(case, device: torch.device | str | None = None) -> torch.Tensor:
    """`case`'s (B, P) int32 block table (its page_size, page_shuffle and seed), on `device` (default: the case's)."""
    return block_table(case.batch, case.kv_len, case.page_size, case.page_shuffle, case.seed,
                       device=case.device if device is None else device)


def to_pages(x: torch.Tensor, table: torch.Tensor, page_size: int) -> torch.Tensor:
    """A contiguous cache x (B, Hkv, M, d) written into a page pool (B·P, page_size, Hkv, d) through `table` (B, P)."""
    batch, kv_heads, kv_len, dim = x.shape
    pages = table.shape[1]
    padded = x.new_zeros(batch, pages * page_size, kv_heads, dim)                # (B, P·page_size, Hkv, d)
    padded[:, :kv_len] = x.transpose(1, 2)
    pool = x.new_empty(batch * pages, page_size, kv_heads, dim)
    pool[table.flatten().long()] = padded.view(batch * pages, page_size, kv_heads, dim)
    return pool


def gather_pages(pool: torch.Tensor, table: torch.Tensor, kv_len: int) -> torch.Tensor:
    """The logical cache (B, Hkv, M, d) read from `pool` (num_pages, page_size, Hkv, d) through `table` (B, P).

    One copy of the B·P pages (whole pages, as a paged kernel reads them);
    the result is a (B, Hkv, M, d) view of the gathered (B, P·page_size, Hkv, d).
    """
    batch, pages = table.shape
    _, page_size, kv_heads, dim = pool.shape
    pages_read = pool.index_select(0, table.flatten())                          # (B·P, page_size, Hkv, d)
    return pages_read.view(batch, pages * page_size, kv_heads, dim)[:, :kv_len].transpose(1, 2)


def page_owner_and_position(table: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per physical page: the sequence that owns it and its first logical position, both (num_pages,) int32.

    Physical slot s then belongs to sequence ``owner[s // page_size]`` at logical
    position ``start[s // page_size] + s % page_size`` (the inverse of the table).
    """
    batch, pages = table.shape
    flat = table.flatten().long()                                                # (B·P,)
    owner = torch.empty(batch * pages, dtype=torch.int32, device=table.device)
    start = torch.empty(batch * pages, dtype=torch.int32, device=table.device)
    owner[flat] = torch.arange(batch, dtype=torch.int32, device=table.device).repeat_interleave(pages)
    start[flat] = (torch.arange(pages, dtype=torch.int32, device=table.device) * page_size).repeat(batch)
    return owner, start


def paged_cache(case, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`case`'s paged KV cache built from the contiguous k (B, Hkv, M, d) and v (B, Hkv, M, d_v), for `prepare`.

    Returns (k_pool (B·P, page_size, Hkv, d), v_pool (B·P, page_size, Hkv, d_v),
    block_table (B, P) int32), all on k's device; the pools are detached copies.
    """
    table = case_block_table(case, device=k.device)
    with torch.no_grad():
        return to_pages(k.detach(), table, case.page_size), to_pages(v.detach(), table, case.page_size), table


def kv_reader(case, k: torch.Tensor, v: torch.Tensor):
    """A zero-argument callable for a timed forward that returns the keys and values (B, Hkv, M, ·) to attend to.

    Contiguous (page_size 0): k and v themselves. Paged: the pools and the
    block table are built here, in `prepare`, and each call gathers the pages
    (`gather_pages`), the work a gathering kernel does in every decode step.
    """
    if not case.page_size:
        return lambda: (k, v)
    k_pool, v_pool, table = paged_cache(case, k, v)

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        return gather_pages(k_pool, table, case.kv_len), gather_pages(v_pool, table, case.kv_len)   # (B, Hkv, M, ·)

    return read

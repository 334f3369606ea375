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

A kernel either gathers the pages back into the logical (B, Hkv, M, d) layout
in its timed forward (`kv_reader`: naive, sdpa, flash-decoding; from a
heads-first pool, so that one gather gives that layout), reads the
pool in place through the table (flash-attn's ``block_table``), or attends to
the whole pool with a mask that maps each physical slot back to its sequence
and logical position (`page_owner_and_position`: Flex's paged path).
"""

from __future__ import annotations

import torch

from attnbench.core.paging import pages_per_sequence

PAGE_TAG = 6151
# index_select copied rows of 256 keys (128 KiB at d = 128) at half the speed of rows of 16-128 keys on
# 2 threads (benchmarks/bench_paged_decode.py's cases): a gathering kernel copies pages in pieces of at most 64 keys.
GATHER_PIECE_KEYS = 64


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


def to_pages(x: torch.Tensor, table: torch.Tensor, page_size: int, heads_first: bool = False) -> torch.Tensor:
    """A contiguous cache x (B, Hkv, M, d) written into a page pool through `table` (B, P).

    The pool is (B·P, page_size, Hkv, d), flash-attn's and vLLM's layout, or
    with `heads_first` (B·P, Hkv, page_size, d), FlashInfer's "HND" layout, in
    which one head's keys of a page are contiguous (what a gathering kernel reads).
    """
    batch, kv_heads, kv_len, dim = x.shape
    pages = table.shape[1]
    padded = x.new_zeros(batch, kv_heads, pages * page_size, dim)              # (B, Hkv, P·page_size, d)
    padded[:, :, :kv_len] = x
    by_page = padded.view(batch, kv_heads, pages, page_size, dim).permute(0, 2, 1, 3, 4)   # (B, P, Hkv, ps, d)
    if not heads_first:
        by_page = by_page.transpose(2, 3)                                          # (B, P, ps, Hkv, d)
    pool = x.new_empty(batch * pages, *by_page.shape[2:])
    pool[table.flatten().long()] = by_page.reshape(batch * pages, *by_page.shape[2:])
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


def paged_cache(case, k: torch.Tensor, v: torch.Tensor,
                heads_first: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`case`'s paged KV cache built from the contiguous k (B, Hkv, M, d) and v (B, Hkv, M, d_v), for `prepare`.

    Returns (k_pool, v_pool, block_table (B, P) int32), all on k's device; the
    pools (`to_pages`, `heads_first` choosing the layout) are detached copies.
    """
    table = case_block_table(case, device=k.device)
    with torch.no_grad():
        return (to_pages(k.detach(), table, case.page_size, heads_first),
                to_pages(v.detach(), table, case.page_size, heads_first), table)


def head_page_rows(table: torch.Tensor, kv_heads: int, pieces: int = 1) -> torch.Tensor:
    """(B·Hkv·P·pieces,) int64: the rows of a heads-first pool viewed as (num_pages·Hkv·pieces, page_size/pieces, d).

    In (b, h, p, piece) order: row ``(table[b, p]·Hkv + h)·pieces + piece`` is
    that piece of head h's part of sequence b's page p, so gathering these
    rows lays the cache out as (B, Hkv, P·page_size, d).
    """
    heads = torch.arange(kv_heads, device=table.device)
    rows = table.long()[:, None, :] * kv_heads + heads[None, :, None]                 # (B, Hkv, P)
    return (rows[..., None] * pieces + torch.arange(pieces, device=table.device)).flatten()


def gather_piece(page_size: int) -> int:
    """Keys per gathered row: the largest divisor of page_size up to GATHER_PIECE_KEYS."""
    return max(n for n in range(1, min(page_size, GATHER_PIECE_KEYS) + 1) if page_size % n == 0)


def kv_reader(case, k: torch.Tensor, v: torch.Tensor, padded: bool = False):
    """A zero-argument callable for a timed forward that returns the keys and values to attend to.

    Contiguous (page_size 0): k and v themselves. Paged: the heads-first
    pools, the block table's row index and two gather buffers are built here,
    in `prepare`; each call gathers every page through the table into the
    buffers (one `index_select` each for k and v, in pieces of at most
    GATHER_PIECE_KEYS keys; the work a gathering kernel does in every decode step) and returns (B, Hkv, M, ·) views of them, or
    with `padded` the whole (B, Hkv, P·page_size, ·) buffers, the last page's
    empty slots (zeros) included.
    """
    if not case.page_size:
        return lambda: (k, v)
    k_pool, v_pool, table = paged_cache(case, k, v, heads_first=True)          # (B·P, Hkv, ps, ·)
    piece = gather_piece(case.page_size)
    rows = head_page_rows(table, case.kv_heads, case.page_size // piece)        # (B·Hkv·P·pieces,)
    batch, pages = table.shape
    k_rows = k_pool.view(-1, piece, k_pool.shape[-1])                           # (B·P·Hkv·pieces, piece, d)
    v_rows = v_pool.view(-1, piece, v_pool.shape[-1])
    k_buffer = k_pool.new_empty(rows.numel(), piece, k_pool.shape[-1])
    v_buffer = v_pool.new_empty(rows.numel(), piece, v_pool.shape[-1])
    length = pages * case.page_size if padded else case.kv_len

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        torch.index_select(k_rows, 0, rows, out=k_buffer)
        torch.index_select(v_rows, 0, rows, out=v_buffer)
        keys = k_buffer.view(batch, case.kv_heads, pages * case.page_size, -1)    # (B, Hkv, P·ps, d)
        values = v_buffer.view(batch, case.kv_heads, pages * case.page_size, -1)
        return keys[:, :, :length], values[:, :, :length]

    return read

"""BigBird's block-sparse attention: a window, global blocks and seeded random blocks (Zaheer et al. 2020).

Keys and queries are cut into blocks of `block` positions. Query block i sees
the key blocks

    window   i − w .. i + w              (causal: i − w .. i)
    global   0 .. g − 1                  (and the queries of those g blocks see every key)
    random   r blocks outside the two above, drawn per query block from the case's seed
             (causal: only from blocks before the window)

and one softmax of q kᵀ/√d runs over the union, so the weights are exact
softmax weights restricted to that pattern (causal: and to keys j <= i). It is
an approximation of full softmax attention, exact for its own pattern, which
the float64 reference (the dense masked softmax of the pattern) computes.
Defaults follow BigBird-ITC: w = 1 (three window blocks), g = 2, r = 3.

The fast path gathers, per query block, its g + 2w + 1 + r key blocks (an index
table built in `prepare`, −1 for a slot with no block: a window past the
edge, a window block that is global, too few blocks to draw from) into one
(b × slots·b) product per block, so time and memory are O(N·slots·b); the
queries of the global blocks are computed densely, O(g·b·M). A decode step
(kv_len > seq_len, causal, queries aligned at the end of the keys) runs the
same with the few query blocks its queries fall in.

State: the random blocks of a future query may fall anywhere before it, so a
sequence being decoded keeps its whole KV cache (`state_size`).
"""

from __future__ import annotations

import math

import torch

from attnbench import (
    AttentionInputs,
    Case,
    Knob,
    Variant,
    attention_flops,
    kv_state_size,
    mask_matrix,
    seeded_weight,
    softmax_attention,
)

_TAG = 2900


def block_table(draws: torch.Tensor, window: int, global_blocks: int, random_blocks: int,
                causal: bool) -> torch.Tensor:
    """(nb, slots) long: the key blocks each query block sees, −1 for an empty slot.

    Slots: the g global blocks, the 2w + 1 window blocks (w + 1 causal) that are not global, then the r
    random blocks: the r largest of the seeded `draws` (nb, nb) among the blocks outside both (causal:
    before the window), a random r-subset per row without repeats.
    """
    key_blocks = draws.shape[0]
    blocks = torch.arange(key_blocks)
    query = blocks[:, None]                                               # (nb, 1)
    near = query + torch.arange(-window, 1 if causal else window + 1)[None, :]   # (nb, window slots)
    near = torch.where((near >= global_blocks) & (near < key_blocks), near, -1)
    far = (blocks[None, :] >= global_blocks) & ((blocks[None, :] - query).abs() > window)
    if causal:
        far &= blocks[None, :] < query
    values, chosen = draws.masked_fill(~far, -math.inf).topk(min(random_blocks, key_blocks), dim=-1)
    chosen = torch.where(values > -math.inf, chosen, -1)
    glob = blocks[:min(global_blocks, key_blocks)].expand(key_blocks, -1)
    return torch.cat([glob, near, chosen], dim=1)


def allowed_blocks(table: torch.Tensor) -> torch.Tensor:
    """(nb, nb) bool from the table: query block i sees key block j."""
    key_blocks = table.shape[0]
    allowed = torch.zeros(key_blocks, key_blocks + 1, dtype=torch.bool)
    allowed.scatter_(1, torch.where(table >= 0, table, key_blocks), True)
    return allowed[:, :key_blocks]


class BigBird(Variant):
    name = "bigbird"
    family = "bigbird"
    computes = "bigbird_attention"
    approximates = "softmax_attention"
    description = "BigBird's block-sparse attention (window, global and seeded random blocks), O(N·blocks·block)"
    knobs = {
        "block": Knob(int, default=64, minimum=1, doc="positions per block (b)"),
        "window": Knob(int, default=1, minimum=0, doc="w: window blocks on each side of a query's own block"),
        "global_blocks": Knob(int, default=2, minimum=0, doc="g: the first g blocks see and are seen by every position"),
        "random_blocks": Knob(int, default=3, minimum=0, doc="r: random key blocks per query block, seeded by the case"),
    }
    dtypes = ("float32", "float16", "bfloat16", "float64")
    supports_cross = True

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.kv_len < case.seq_len or (case.kv_len > case.seq_len and not case.causal):
            reasons.append("kv_len != seq_len only as a causal decode step (kv_len > seq_len, the queries "
                           "aligned at the end of the keys): BigBird's blocks are positions of one sequence")
        return reasons

    # ---- the pattern

    def _geometry(self, case: Case):
        block, window, global_blocks, random_blocks = self.knob_values(case, "block", "window", "global_blocks",
                                                                       "random_blocks")
        key_blocks = -(-case.kv_len // block)
        draws = seeded_weight(case, _TAG, (key_blocks, key_blocks))      # the random blocks' seeded draws
        table = block_table(draws, window, global_blocks, random_blocks, case.causal)
        return block, min(global_blocks, key_blocks), table

    def mask_mod(self, case: Case):
        """The pattern as a mask_mod (b, h, q_idx, kv_idx), q_idx counted from the first query (end-aligned)."""
        block, global_blocks, table = self._geometry(case)
        allowed = allowed_blocks(table)
        offset = case.kv_len - case.seq_len
        causal = case.causal

        def bigbird(b, h, q_idx, kv_idx):
            position = q_idx + offset
            seen = allowed.to(position.device)[position // block, kv_idx // block] | (position < global_blocks * block)
            return seen & (kv_idx <= position) if causal else seen

        return bigbird

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, mask_mod=self.mask_mod(case))

    def attention_weights(self, case: Case, inputs: AttentionInputs) -> torch.Tensor:
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        allowed = mask_matrix(self.mask_mod(case), case.seq_len, case.kv_len)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(case.head_dim)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)

    # ---- the fast path

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        block, global_blocks, table = self._geometry(case)
        seq_len, kv_len = case.seq_len, case.kv_len
        offset = kv_len - seq_len
        key_blocks = table.shape[0]
        lead = offset % block                                             # query rows before the first query
        first = offset // block                                           # its block
        query_blocks = -(-(lead + seq_len) // block)
        rows = table[first:first + query_blocks]                          # (nq, slots)
        slots = rows.shape[1]
        index = torch.where(rows >= 0, rows, key_blocks).to(q.device)     # −1 -> the zero block
        # which (query row, gathered key) pairs are hidden, (nq, b, slots·b)
        query_position = (first * block + torch.arange(query_blocks * block)).view(query_blocks, block, 1)
        key_position = (rows[:, :, None] * block + torch.arange(block)).view(query_blocks, 1, slots * block)
        hidden = (rows < 0).repeat_interleave(block, dim=1)[:, None, :] | (key_position >= kv_len)
        if case.causal:
            hidden = hidden | (key_position > query_position)
        hidden = hidden.to(q.device)
        dense_rows = max(0, min(seq_len, global_blocks * block - offset))  # queries in a global block
        dense_hidden = None
        if dense_rows and case.causal:
            dense_hidden = (torch.arange(kv_len)[None, :] > torch.arange(dense_rows)[:, None] + offset).to(q.device)
        scale = 1.0 / math.sqrt(case.head_dim)
        padded_keys = (key_blocks + 1) * block

        def forward() -> torch.Tensor:
            batch, heads, _, head_dim = q.shape
            q_blocks = torch.nn.functional.pad(q, (0, 0, lead, query_blocks * block - lead - seq_len))
            q_blocks = q_blocks.view(batch, heads, query_blocks, block, head_dim)          # (B, H, nq, b, d)
            k_blocks = torch.nn.functional.pad(k, (0, 0, 0, padded_keys - kv_len)).view(batch, heads, -1, block, head_dim)
            v_blocks = torch.nn.functional.pad(v, (0, 0, 0, padded_keys - kv_len)).view(batch, heads, -1, block, v.shape[-1])
            k_seen = k_blocks[:, :, index].flatten(3, 4)                  # (B, H, nq, slots·b, d)
            v_seen = v_blocks[:, :, index].flatten(3, 4)                  # (B, H, nq, slots·b, d_v)
            scores = (q_blocks @ k_seen.transpose(-2, -1)) * scale        # (B, H, nq, b, slots·b)
            scores = scores.masked_fill(hidden, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v_seen                  # (B, H, nq, b, d_v)
            out = out.flatten(2, 3)[:, :, lead:lead + seq_len]            # (B, H, N, d_v)
            if dense_rows:
                dense = (q[:, :, :dense_rows] @ k.transpose(-2, -1)) * scale              # (B, H, G, M)
                if dense_hidden is not None:
                    dense = dense.masked_fill(dense_hidden, float("-inf"))
                out = torch.cat([torch.softmax(dense, dim=-1) @ v, out[:, :, dense_rows:]], dim=2)
            return out

        return forward

    # ---- counts

    def _pairs(self, case: Case) -> tuple[int, int]:
        """(visible pairs of the pattern, pairs the fast path computes), without an (N, M) matrix."""
        block, global_blocks, table = self._geometry(case)
        offset = case.kv_len - case.seq_len
        positions = torch.arange(offset, case.kv_len)                     # each query's key position
        dense = positions < global_blocks * block
        query_block = positions // block
        key_blocks = table.shape[0]
        allowed = allowed_blocks(table).long()                             # (nb, nb)
        width = torch.full((key_blocks,), block)
        width[-1] = case.kv_len - (key_blocks - 1) * block                 # keys in each block
        if case.causal:
            before = allowed * (torch.arange(key_blocks)[None, :] < torch.arange(key_blocks)[:, None])
            seen = (before * width).sum(-1)[query_block] + (positions - query_block * block + 1)
            dense_seen = positions + 1
        else:
            seen = (allowed * width).sum(-1)[query_block]
            dense_seen = torch.full_like(positions, case.kv_len)
        visible = int(torch.where(dense, dense_seen, seen).sum())
        query_blocks = -(-(offset % block + case.seq_len) // block)
        performed = query_blocks * block * table.shape[1] * block + int(dense.sum()) * case.kv_len
        return visible, performed

    def flops(self, case: Case) -> int:
        """q kᵀ and P v over the pattern's visible pairs (the useful count of `bigbird_attention`)."""
        return attention_flops(case, pairs=self._pairs(case)[0])

    def performed_flops(self, case: Case) -> int:
        """Every gathered slot of every query block (empty slots and padding included), and the dense global rows."""
        return attention_flops(case, pairs=self._pairs(case)[1])

    def state_size(self, case: Case) -> int:
        """The whole KV cache: a later query's random blocks may fall on any earlier key."""
        return kv_state_size(case)

    def memory_model(self, case: Case) -> int:
        block, global_blocks, table = self._geometry(case)
        slots = table.shape[1]
        query_blocks = -(-((case.kv_len - case.seq_len) % block + case.seq_len) // block)
        rows = query_blocks * block
        d, dv = case.head_dim, case.v_head_dim
        per_head = (rows * slots * block * 3                              # scores, masked, softmax
                    + rows * slots * (d + dv)                             # gathered keys and values
                    + (rows + case.kv_len + block) * (d + dv)             # padded q, k, v
                    + 2 * rows * dv                                       # block output, the cut copy
                    + global_blocks * block * case.kv_len * 2)            # dense global rows
        return case.batch * case.heads * case.element_bytes * per_head

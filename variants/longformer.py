"""Longformer's sparse attention: a sliding window plus a few global tokens.

Query i attends to keys j with |i − j| <= window (causal: i − window <= j <= i)
and to the first `global_tokens` positions; those G global positions in turn
attend to every key (causal: every key up to themselves). One softmax runs
over the union, so the weights are exact softmax weights restricted to that
pattern (Beltagy et al., 2020). The case maps directly: q (B, H, N, d), k and
v (B, H, N, d) are the attention's inputs (self-attention, kv_len == seq_len),
the output is (B, H, N, d).

`longformer` computes the band with the overlapping-chunk method of the paper:
queries in blocks of c = window/2 rows (window below 64: c = window), each
block against the c + 2·window keys
around it (c + window causal), taken as a strided view of the padded keys, so
time and memory are O(N·window) and no N×N mask exists anywhere. The G global
key columns join each row's softmax (band keys below G are masked so no key
counts twice), and the G global rows are computed densely, O(G·N).

`longformer-flex` gives the same pattern to FlexAttention as a block mask and
runs it under torch.compile (compiled once in `prepare`).

With the case's mask ``sliding_window:W`` both variants compute exactly the
function naive, sdpa-* and flex compute for that case, softmax attention under
the mask (|i − j| <= W, and j <= i if causal: flash-attn's window), so the report
ranks them as implementations of one function. `window` is one-sided, as the
mask's W is, so no conversion: the case must set ``window = W`` and
``global_tokens = 0``, and a knob that disagrees is a reason saying what to
set. The window is not taken from the mask instead: a case's params hold every
knob, defaults filled in, so its id would then claim a window it did not run.
For such a case `reference` is the exact masked softmax, `flops` is
``attention_flops(case)`` (the same count as naive's) and
``approximation(case)``, the per-case form of `approximates`, is None: the
error is numerical, not an approximation. With mask ``none`` nothing changes:
the variants approximate full softmax attention.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from attnbench import (
    AttentionInputs,
    Case,
    Knob,
    Variant,
    attention_flops,
    band_mask_mod,
    case_mask_mod,
    case_window,
    causal_mask,
    causal_mask_mod,
    kv_state_size,
    mask_matrix,
    softmax_attention,
    visible_pairs,
)

# `longformer` runs one dense masked SDPA call instead of its chunks when the chunks would compute more
# than this share of the N² pairs (calibrated with benchmarks/bench_longformer_dense.py).
DENSE_ABOVE = 0.25


def longformer_mask_mod(seq_len: int, window, global_tokens, causal: bool):
    """The pattern as one mask_mod (b, h, q_idx, kv_idx): in the band |i − j| <= window, or a global
    row or column (i < G or j < G); causal: and j <= i.

    `window` and `global_tokens` may be 0-d tensors, which compiled code takes as inputs.
    """
    in_band = band_mask_mod(seq_len, seq_len, window)
    in_order = causal_mask_mod(seq_len, seq_len)

    def longformer(b, h, q_idx, kv_idx):
        allowed = in_band(b, h, q_idx, kv_idx) | (q_idx < global_tokens) | (kv_idx < global_tokens)
        return allowed & in_order(b, h, q_idx, kv_idx) if causal else allowed

    return longformer


def allowed_pattern(seq_len: int, window: int, global_tokens: int, causal: bool,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
    """The explicit (R, N) boolean pattern: which key each query sees (for references and small maps)."""
    return mask_matrix(longformer_mask_mod(seq_len, window, global_tokens, causal), seq_len, seq_len, rows=rows)


def sparse_attention_reference(q, k, v, window: int, global_tokens: int, causal: bool,
                               rows: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over the allowed keys of q kᵀ/√d, times v, written out plainly."""
    weights = sparse_attention_weights(q, k, window, global_tokens, causal, rows)   # (B, H, R, N)
    return weights @ v                                                    # (B, H, R, d)


def sparse_attention_weights(q, k, window: int, global_tokens: int, causal: bool,
                             rows: torch.Tensor | None = None) -> torch.Tensor:
    seq_len, head_dim = k.shape[-2], q.shape[-1]
    if rows is not None:
        q = q[..., rows, :]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)              # (B, H, R, N)
    allowed = allowed_pattern(seq_len, window, global_tokens, causal, rows)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def block_size(window: int) -> int:
    """Queries per chunk: half the window (a chunk then sees 2.5·w keys for the 2·w + 1 it needs, not 3·w)."""
    return max(window // 2, 1) if window >= 64 else window


def band_geometry(seq_len: int, window: int, causal: bool) -> tuple[int, int, int, int]:
    """(window clamped to the sequence, c queries per chunk, nb chunks, span keys each chunk sees)."""
    window = min(window, seq_len - 1) if seq_len > 1 else 1
    block = block_size(window)                                            # c
    return window, block, -(-seq_len // block), block + (window if causal else 2 * window)


def banded_masks(seq_len: int, window: int, global_tokens: int, causal: bool, device=None):
    """What `banded_attention` hides, True where a score is masked; built once, in `prepare`.

    band (nb, c, span): key slot b of chunk i is position i·c − w + b, hidden outside the band, past
        the end, or below G (the global columns join separately, so no key counts twice);
    global_columns (nb, c, G), causal only: global key j hidden from the query at padded position p when j > p;
    global_rows (G, N), causal only: the causal mask of the G global rows, computed densely.
    """
    window, block, blocks, span = band_geometry(seq_len, window, causal)
    query_slot = torch.arange(block, device=device)
    key_slot = torch.arange(span, device=device)
    offset = key_slot[None, :] - window - query_slot[:, None]             # j − i, (c, span)
    in_band = (offset <= 0) & (offset >= -window) if causal else offset.abs() <= window
    key_position = (torch.arange(blocks, device=device)[:, None] * block - window + key_slot[None, :])   # (nb, span)
    key_valid = (key_position >= global_tokens) & (key_position < seq_len)
    band = ~(in_band[None, :, :] & key_valid[:, None, :])                 # (nb, c, span)
    global_columns = global_rows = None
    if causal and global_tokens:
        padded = blocks * block
        # the first G columns of the (padded × padded) causal mask, without building the rest
        global_columns = ~mask_matrix(causal_mask_mod(padded, padded), padded, global_tokens,
                                      device=device).view(blocks, block, global_tokens)   # (nb, c, G)
        global_rows = ~causal_mask(seq_len, seq_len, rows=torch.arange(global_tokens, device=device),
                                   device=device)                          # (G, N)
    return band, global_columns, global_rows


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     global_tokens: int, causal: bool, masks=None) -> torch.Tensor:
    """Sliding-window (+ global) attention by overlapping chunks, O(N·window). q, k, v (B, H, N, d).

    `masks` is `banded_masks(...)` for the same arguments (built here when not given).
    """
    batch, heads, seq_len, head_dim = q.shape
    if masks is None:
        masks = banded_masks(seq_len, window, global_tokens, causal, q.device)
    masked, global_columns, global_rows = masks
    window, block, blocks, span = band_geometry(seq_len, window, causal)
    padded = blocks * block
    right = padded - seq_len + (0 if causal else window)
    scale = 1.0 / math.sqrt(head_dim)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)

    q_blocks = torch.nn.functional.pad(q, (0, 0, 0, padded - seq_len)).view(batch, heads, blocks, block, head_dim)
    k_padded = torch.nn.functional.pad(k, (0, 0, window, right))          # (B, H, w + N + right, d)
    v_padded = torch.nn.functional.pad(v, (0, 0, window, right))
    k_windows = k_padded.unfold(2, span, block)                           # (B, H, nb, d, span), a view
    v_windows = v_padded.unfold(2, span, block).transpose(-2, -1)         # (B, H, nb, span, d), a view

    scores = torch.matmul(q_blocks, k_windows)                            # (B, H, nb, c, span)
    scores = scores.mul_(scale).masked_fill_(masked, float("-inf")) if not grad else \
        (scores * scale).masked_fill(masked, float("-inf"))
    row_max = scores.detach().amax(dim=-1, keepdim=True)                  # (B, H, nb, c, 1)
    if global_tokens:
        k_global, v_global = k[:, :, None, :global_tokens], v[:, :, None, :global_tokens]   # (B, H, 1, G, d)
        global_scores = torch.matmul(q_blocks, k_global.transpose(-2, -1)) * scale   # (B, H, nb, c, G)
        if causal:
            global_scores = global_scores.masked_fill(global_columns, float("-inf"))
        row_max = torch.maximum(row_max, global_scores.detach().amax(dim=-1, keepdim=True))
    # softmax with the normalisation applied to the (c, d) output instead of the (c, span) weights
    probs = scores.sub_(row_max).exp_() if not grad else (scores - row_max).exp()
    del scores
    row_sum = probs.sum(dim=-1, keepdim=True)                             # (B, H, nb, c, 1)
    out = torch.matmul(probs, v_windows)                                  # (B, H, nb, c, d)
    if global_tokens:
        global_probs = (global_scores - row_max).exp()
        row_sum = row_sum + global_probs.sum(dim=-1, keepdim=True)
        out = out + torch.matmul(global_probs, v_global)
    out = out.div_(row_sum) if not grad else out / row_sum
    out = out.view(batch, heads, padded, head_dim)[:, :, :seq_len]        # (B, H, N, d)
    if global_tokens:
        # the global rows see every key (causal: every earlier key), computed densely
        dense_scores = (q[:, :, :global_tokens] @ k.transpose(-2, -1)) * scale        # (B, H, G, N)
        if causal:
            dense_scores = dense_scores.masked_fill(global_rows, float("-inf"))
        dense = torch.softmax(dense_scores, dim=-1) @ v                   # (B, H, G, d)
        out = torch.cat([dense, out[:, :, global_tokens:]], dim=-2)
    return out if out.is_contiguous() else out.contiguous()


class _LongformerBase(Variant):
    family = "longformer"
    computes = "sliding_window_attention"
    approximates = "softmax_attention"
    knobs = {
        "window": Knob(int, default=256, minimum=1, doc="keys on each side of a query (|i − j| <= window)"),
        "global_tokens": Knob(int, default=0, minimum=0, doc="G: the first G positions see every key and are seen by every query"),
    }
    supports_cross = False
    cross_reason = "is self-attention over one sequence: needs kv_len == seq_len"
    supported_masks = ("sliding_window",)

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        mask_window = case_window(case)
        if mask_window is None:
            return reasons
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        minimum = self.knobs["window"].minimum
        if mask_window < minimum:
            reasons.append(f"with mask {case.mask} each query sees only its own key, and {self.name}'s window is "
                           f"at least {minimum} (naive, sdpa-* and flex take this mask)")
        elif (window, global_tokens) != (mask_window, 0):
            got = [f"{name}={value!r}" for name, value, want in
                   (("window", window, mask_window), ("global_tokens", global_tokens, 0)) if value != want]
            reasons.append(f"with mask {case.mask} set window={mask_window} and global_tokens=0, got {', '.join(got)}")
        return reasons

    def approximation(self, case: Case) -> str | None:
        """The exact function this case's output stands in for: none under its own sliding_window mask."""
        return None if case_window(case) is not None else self.approximates

    def reference(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        if case_window(case) is not None:
            return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows, mask_mod=case_mask_mod(case))
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        return sparse_attention_reference(*inputs.tensors(), window, global_tokens, case.causal, rows)

    def attention_weights(self, case: Case, inputs: AttentionInputs, rows=None) -> torch.Tensor:
        """The pattern's softmax weights, (B, H, N, N) float64; with `rows` only those queries, (B, H, R, N),
        formed from the R query rows alone (no N × N scores or pattern)."""
        q, k, _ = (t.detach().to("cpu", torch.float64) for t in inputs.tensors())
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        return sparse_attention_weights(q, k, window, global_tokens, case.causal, rows)

    def _visible_pairs(self, case: Case) -> int:
        """(query, key) pairs of the pattern, in closed form: the global rows and columns, then the band
        of the (N − G) × (N − G) square they leave (every other band pair is in a global row or column)."""
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        n = case.seq_len
        g = min(global_tokens, n)
        if case.causal:
            global_pairs = g * (g + 1) // 2 + (n - g) * g                 # global row i sees i + 1 keys
        else:
            global_pairs = 2 * g * n - g * g
        return global_pairs + visible_pairs(n - g, n - g, causal=case.causal, window=window)

    def state_size(self, case: Case) -> int:
        """The keys and values a decoding query still sees: its window (W + 1 with itself) and the G global ones."""
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        if case_window(case) is not None:
            window = case_window(case)
        return kv_state_size(case, keys=window + 1 + global_tokens)

    def flops(self, case: Case) -> int:
        """q kᵀ and P v over the pattern's visible pairs; the same for `longformer` and `longformer-flex`.

        Under a sliding_window mask that is the mask's own count, ``attention_flops(case)``, as naive's.
        """
        if case_window(case) is not None:
            return attention_flops(case)
        return attention_flops(case, pairs=self._visible_pairs(case))



class Longformer(_LongformerBase):
    name = "longformer"
    description = ("sliding-window + global attention by overlapping chunks (Beltagy et al.), O(N·window); "
                   "one masked SDPA call where the band is dense")

    def execution(self, case: Case) -> str:
        """'banded' (overlapping chunks) when the band is sparse, 'dense' (one SDPA call with the
        pattern as an (N, N) boolean mask) when the chunks would compute more than
        `DENSE_ABOVE` of the N² pairs the dense call computes."""
        n = case.seq_len
        return "dense" if self._slots(case) > DENSE_ABOVE * n * n else "banded"

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        global_tokens = min(global_tokens, case.seq_len)
        causal = case.causal
        if self.execution(case) == "dense":
            allowed = allowed_pattern(case.seq_len, window, global_tokens, causal).to(q.device)   # (N, N)

            def dense() -> torch.Tensor:
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)

            return dense
        masks = banded_masks(case.seq_len, window, global_tokens, causal, q.device)

        def forward() -> torch.Tensor:
            return banded_attention(q, k, v, window, global_tokens, causal, masks)

        return forward

    def _band(self, case: Case) -> tuple[int, int, int, int, int, int, int]:
        """(seq_len, head_dim, half-window, global tokens, block rows c, blocks, keys each block sees)."""
        n, d = case.seq_len, case.head_dim
        window, g = self.knob_values(case, "window", "global_tokens")
        w = min(window, n - 1) if n > 1 else 1
        c = block_size(w)
        return n, d, w, min(g, n), c, -(-n // c), c + (w if case.causal else 2 * w)

    def _slots(self, case: Case) -> int:
        """The (query, key) slots the chunks compute: each c-row block against c + 2w (causal c + w) keys,
        every padded query against the G global columns, and the G global rows densely."""
        n, _, _, g, c, blocks, span = self._band(case)
        return blocks * c * span + blocks * c * g + g * n

    def performed_flops(self, case: Case) -> int:
        """q kᵀ and P v over the slots the chosen execution computes: the chunks' padded slots, or N²."""
        dense = self.execution(case) == "dense"
        return attention_flops(case, pairs=case.seq_len ** 2 if dense else self._slots(case))

    def memory_model(self, case: Case) -> int:
        n, d, w, g, c, blocks, span = self._band(case)
        if self.execution(case) == "dense":                               # the (N, N) bool mask, output, log-sum-exp
            return n * n + case.batch * case.heads * n * (d * case.element_bytes + 4)
        padded = blocks * c
        e, heads = case.element_bytes, case.batch * case.heads
        scores = padded * span                                            # the band scores, exponentiated in place
        copies = padded * d + 2 * (padded + 2 * w) * d + 2 * blocks * span * d   # padded q, k, v and matmul's window copies
        output = 2 * padded * d                                           # the block output and its contiguous copy
        global_part = padded * g * 2 + 2 * g * n if g else 0
        mask = blocks * c * span                                          # bool pattern, shared by every head
        return heads * e * (scores + copies + output + global_part) + mask


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def longformer_block_mask(seq_len: int, window: int, global_tokens: int, causal: bool, device: str):
    """The Longformer pattern as a FlexAttention block mask (blocks that are all masked are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    # tensors, not ints: compiled code takes them as inputs instead of recompiling for every window
    window_t = torch.tensor(window, device=device)
    global_t = torch.tensor(global_tokens, device=device)
    mask_mod = longformer_mask_mod(seq_len, window_t, global_t, causal)
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


class LongformerFlex(_LongformerBase):
    name = "longformer-flex"
    description = "the Longformer pattern as a FlexAttention block mask, under torch.compile"
    compiles = True
    dtypes = ("float32", "float16", "bfloat16")

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError:
            reasons.append(f"needs torch.nn.attention.flex_attention (torch >= 2.5); this is torch {torch.__version__}")
        if case.device == "cpu" and case.mode == "fwd_bwd":
            reasons.append("FlexAttention's compiled CPU kernel is inference only: no backward on the CPU")
        return reasons

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        window, global_tokens = self.knob_values(case, "window", "global_tokens")
        block_mask = longformer_block_mask(case.seq_len, window, global_tokens, case.causal, q.device.type)
        flex = _compiled_flex()
        scale = 1.0 / math.sqrt(case.head_dim)

        def forward() -> torch.Tensor:
            return flex(q, k, v, block_mask=block_mask, scale=scale)

        forward()                                                         # compile here, outside the timed region
        return forward

    def memory_model(self, case: Case) -> int:
        output = case.batch * case.heads * case.seq_len * case.head_dim * case.element_bytes
        logsumexp = case.batch * case.heads * case.seq_len * 4
        blocks = -(-case.seq_len // 128)
        block_mask = 4 * blocks * blocks * 4                              # counts and indices, full and partial
        return output + logsumexp + block_mask

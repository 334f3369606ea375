"""xFormers' `memory_efficient_attention` (xformers.ops), dispatched by xFormers itself.

out = softmax(q kᵀ / √d + bias) v. attnbench's q (B, H, N, d), k (B, Hkv, M, d)
and v (B, Hkv, M, d_v) become xFormers' layout by views only (`xformers_layout`,
built in `prepare`): BMHK (B, N, H, d) by a transpose, or, for grouped heads
(GQA/MQA), BMGHK (B, N, Hkv, G, d) with k and v expanded (stride 0, not copied)
over the G query heads of each key/value head. The output is handed back as a
(B, H, N, d_v) view.

The mask and score mod are one ``attn_bias`` (`attention_bias`, a pure function
of the case, unit-tested against `case_mask_matrix` on CPU):

- causal: `LowerTriangularMask` when N == M; when they differ, attnbench's
  end-aligned mask (query i sees keys j <= i' = i + M − N) is
  `LowerTriangularFromBottomRightMask` (plain `LowerTriangularMask` is aligned
  at the top left);
- ``sliding_window:W``: `LowerTriangularFromBottomRightLocalAttentionMask(W + 1)`
  with causal, `LocalAttentionFromBottomRightMask(W, W)` without;
- ``alibi``, ``document:K`` and ``prefix_lm:P``: a dense float tensor (ALiBi's
  bias, −∞ where the mask hides a key), since xFormers has no bias object for
  them that fits a batch of equal-length sequences (its block-diagonal masks
  want batch 1 and packed sequences). It costs H·N·M (N·M for a mask alone)
  elements, rows padded for alignment, and only operators that take a tensor
  bias (cutlass, not flash) can run it;
- ``softcap:C`` is not a bias: unsupported.

A ragged batch (`lengths`) runs ``packed``: the sequences' tokens end to end
as one batch entry, (1, Σq, H, d), under `BlockDiagonalMask` (or, causal,
`BlockDiagonalCausalFromBottomRightMask`, aligned at the end of each
sequence's keys) from the sequences' lengths: `block_diagonal_bias`, a pure
function of the case, unit-tested on CPU.

A query that sees no key outputs 0 with the bias objects; with a dense bias its
row is all −∞ (causal with kv_len < seq_len), and the accuracy check is the
judge of what the kernel makes of it.

What it supports is xFormers' own answer: `unsupported_reasons` builds
`xformers.ops.fmha.Inputs` shaped like the case (its layout, dtype, device and
bias type, from zero-stride views, no memory), asks every forward operator
(and, for fwd_bwd, every backward operator) for its `not_supported_reasons`,
and when none can run returns each operator's "`NAME` is not supported
because: ..." text, plus why xFormers' C++/CUDA extensions did not load if they did not.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from attnbench import (
    AttentionInputs,
    Case,
    ExactSoftmaxKernel,
    case_mask_matrix,
    case_window,
    is_ragged,
    packed_inputs,
    ragged_batch,
    ragged_execution,
    score_bias,
    torch_dtype,
)


def _import_fmha():
    """xformers.ops.fmha, imported with xFormers' load-time warning silenced (its text becomes a reason)."""
    logger = logging.getLogger("xformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from xformers.ops import fmha
    finally:
        logger.setLevel(level)
    return fmha


def _extension_load_error() -> str | None:
    """xFormers' own message when its compiled extensions failed to load, first line only."""
    try:
        from xformers import _cpp_lib
    except Exception:  # an xFormers without this module: nothing to add
        return None
    error = getattr(_cpp_lib, "_cpp_library_load_exception", None)
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3])


# A dense bias's rows are padded to a multiple of this many keys: xFormers' cutlass kernel needs
# each row 16-byte aligned (8 float16 or bfloat16 values, 4 float32).
KEY_ALIGNMENT = 8



def needs_dense_bias(case: Case) -> bool:
    """Whether `case` goes to xFormers as a dense tensor: ALiBi, document and prefix_lm have no bias object here."""
    return case.score_mod == "alibi" or case.mask.partition(":")[0] in ("document", "prefix_lm")


def mask_bias(fmha, case: Case):
    """xFormers' `AttentionBias` object for `case`'s causal flag and sliding window; None when every key is visible.

    Causal with N == M is `LowerTriangularMask`; with N != M, attnbench's end alignment is the
    bottom-right mask. `LowerTriangularFromBottomRightLocalAttentionMask(w)` lets query i' see the
    w keys i' − w + 1 .. i', so attnbench's causal ``sliding_window:W`` is w = W + 1;
    `LocalAttentionFromBottomRightMask` takes i' − left <= j <= i' + right, so the two-sided window is (W, W).
    """
    bias, window = fmha.attn_bias, case_window(case)
    if window is None:
        if not case.causal:
            return None
        if case.seq_len == case.kv_len:
            return bias.LowerTriangularMask()
        return bias.LowerTriangularFromBottomRightMask()
    if case.causal:
        return bias.LowerTriangularFromBottomRightLocalAttentionMask(window + 1)
    return bias.LocalAttentionFromBottomRightMask(window_left=window, window_right=window)


def block_diagonal_bias(fmha, case: Case):
    """xFormers' bias for a packed ragged `case`: `BlockDiagonalMask` of the sequences' query and key lengths, or,
    causal, `BlockDiagonalCausalFromBottomRightMask` (query i of a sequence sees its keys j <= i + m − q)."""
    batch = ragged_batch(case)
    kind = (fmha.attn_bias.BlockDiagonalCausalFromBottomRightMask if case.causal
            else fmha.attn_bias.BlockDiagonalMask)
    return kind.from_seqlens(q_seqlen=list(batch.queries), kv_seqlen=list(batch.keys))


def dense_bias_shape(case: Case) -> tuple[int, ...]:
    """(B, H, N, M), or (B, Hkv, G, N, M) for grouped heads: the shape xFormers wants of a tensor bias."""
    heads = (case.kv_heads, case.heads // case.kv_heads) if case.grouped else (case.heads,)
    return (case.batch, *heads, case.seq_len, case.kv_len)


def dense_bias(case: Case, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The dense float bias in `dense_bias_shape`: ALiBi's −slope_h·|i' − j| (else 0), and −∞ where the mask hides a key.

    One (H, N, M) block with ALiBi, one (N, M) block for a mask alone, stored in rows padded
    to a multiple of KEY_ALIGNMENT keys and broadcast over the batch (and the heads) with
    stride 0: H·N·M' (or N·M') elements, M' the padded kv_len. That is the memory cost of a
    mask that has no `AttentionBias` object, and the kernel reads it for every block.
    """
    n, m = case.seq_len, case.kv_len
    values = score_bias(case, dtype=torch.float32, device=device)                 # (H, N, M) ALiBi, or None
    if values is None:
        values = torch.zeros(1, n, m, device=device)                             # (1, N, M)
    allowed = case_mask_matrix(case, device=device)                              # (N, M) bool, or None
    if allowed is not None:
        values = values.masked_fill(~allowed, float("-inf"))
    padded = -(-m // KEY_ALIGNMENT) * KEY_ALIGNMENT
    rows = torch.empty(values.shape[0], n, padded, dtype=dtype, device=device)[..., :m]   # (H or 1, N, M), aligned
    rows.copy_(values)
    full = rows.expand(case.batch, case.heads, n, m)                            # (B, H, N, M), stride 0 on B
    return full.unflatten(1, dense_bias_shape(case)[1:-2])                       # (B, H, N, M) or (B, Hkv, G, N, M)


def attention_bias(fmha, case: Case, dtype: torch.dtype, device: torch.device | str):
    """The ``attn_bias`` that makes memory_efficient_attention compute `case`: `dense_bias` or `mask_bias`."""
    return dense_bias(case, dtype, device) if needs_dense_bias(case) else mask_bias(fmha, case)


def xformers_layout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """q (B, H, N, d), k (B, Hkv, M, d), v (B, Hkv, M, d_v) as xFormers' inputs, all three views of them.

    BMHK, (B, N, H, d) and (B, M, H, d), when Hkv == H. Otherwise BMGHK: q (B, N, Hkv, G, d)
    with query head h = kv·G + g, and k, v expanded to (B, M, Hkv, G, d) with stride 0 over
    the G heads of a group, xFormers' layout for grouped heads, with no copy.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    query, key, value = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # (B, N, H, d), (B, M, Hkv, d)
    if kv_heads == heads:
        return query, key, value
    groups = heads // kv_heads
    query = query.unflatten(2, (kv_heads, groups))                                  # (B, N, Hkv, G, d)
    key = key.unsqueeze(3).expand(-1, -1, -1, groups, -1)                           # (B, M, Hkv, G, d), stride 0 on G
    value = value.unsqueeze(3).expand(-1, -1, -1, groups, -1)                       # (B, M, Hkv, G, d_v)
    return query, key, value

def _operators(fmha, backward: bool) -> list:
    """Every operator xFormers could dispatch to, in its own preference order, without repeats."""
    if backward:
        preferred = [getattr(fmha, "flash", None) and fmha.flash.BwOp, getattr(fmha, "cutlass", None) and fmha.cutlass.BwOp]
        everything = list(getattr(fmha, "ALL_BW_OPS", []))
    else:
        preferred = [getattr(fmha, "flash", None) and fmha.flash.FwOp, getattr(fmha, "cutlass", None) and fmha.cutlass.FwOp]
        everything = list(getattr(fmha, "ALL_FW_OPS", []))
    ops = []
    for op in preferred + everything:
        if op is not None and op not in ops:
            ops.append(op)
    return ops


def _probe_bias(fmha, case: Case, dtype: torch.dtype):
    """The case's bias for a support check: its `mask_bias`, or a dense bias's shape and dtype with no memory."""
    if is_ragged(case):
        return block_diagonal_bias(fmha, case)
    if not needs_dense_bias(case):
        return mask_bias(fmha, case)
    shape = dense_bias_shape(case)
    return torch.empty((), dtype=dtype, device=case.device).expand(shape)              # stride 0 everywhere


def _probe_inputs(fmha, case: Case):
    """fmha.Inputs with the case's shapes, layout, dtype, device and bias, backed by one row per head each."""
    dtype = torch_dtype(case.dtype)

    entries, queries, keys = case.batch, case.seq_len, case.kv_len
    if is_ragged(case):                                                           # packed: one entry of every token
        batch = ragged_batch(case)
        entries, queries, keys = 1, batch.total_queries, batch.total_keys

    def probe(heads: int, length: int, dim: int) -> torch.Tensor:
        row = torch.empty(entries, heads, 1, dim, dtype=dtype, device=case.device)
        return row.expand(entries, heads, length, dim)                            # (B, heads, L, dim), stride 0 on L

    query, key, value = xformers_layout(probe(case.heads, queries, case.head_dim),
                                        probe(case.kv_heads, keys, case.head_dim),
                                        probe(case.kv_heads, keys, case.v_head_dim))
    return fmha.Inputs(query=query, key=key, value=value, attn_bias=_probe_bias(fmha, case, dtype))

def _operator_reasons(op, inputs) -> list[str]:
    try:
        return list(op.not_supported_reasons(inputs))
    except Exception as exc:  # an operator whose check itself fails cannot be used
        return [f"its support check raised {type(exc).__name__}: {exc}"]


def xformers_reasons(case: Case) -> list[str]:
    """xFormers' own reasons it cannot run `case`; empty when some operator can (forward and, if asked, backward)."""
    fmha = _import_fmha()
    inputs = _probe_inputs(fmha, case)
    stages = [("forward", False)] + ([("backward", True)] if case.mode == "fwd_bwd" else [])
    reasons = []
    for stage, backward in stages:
        verdicts = [(op, _operator_reasons(op, inputs)) for op in _operators(fmha, backward)]
        if any(not why for _, why in verdicts):
            continue
        for op, why in verdicts:
            name = getattr(op, "NAME", op.__name__)
            reasons.append(f"xFormers {stage}: `{name}` is not supported because: {'; '.join(why)}")
    if reasons:
        load_error = _extension_load_error()
        if load_error:
            reasons.append(load_error)
    return reasons


class XformersMemoryEfficient(ExactSoftmaxKernel):
    name = "xformers"
    family = "flash"
    description = ("xformers.ops.memory_efficient_attention, BMHK (BMGHK for grouped heads) layout via views, "
                   "xFormers' dispatch")
    dtypes = ("float32", "float16", "bfloat16")
    requires = ("xformers",)
    supports_gqa = True
    supports_v_head_dim = True
    supported_masks = ("sliding_window", "document", "prefix_lm")
    supported_score_mods = ("alibi",)
    supports_lengths = True
    supported_layouts = ("packed",)
    layout_reason = "xFormers takes a ragged batch packed (a BlockDiagonalMask over one entry), not {layout}"
    score_mod_reason = ("xFormers' memory_efficient_attention takes masks and additive biases only, which cannot "
                        "express {kind} (score mods it takes: {mods}); use naive, flex or flash-attn")

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if importlib.util.find_spec("xformers") is None:
            return reasons
        if case.device == "cuda" and not torch.cuda.is_available():
            return reasons                                    # xFormers' checks would need the GPU to answer
        try:
            own = xformers_reasons(case)
        except Exception as exc:  # a broken xFormers install must become a reason, never an exception
            return reasons + [f"xFormers could not be asked about this case: {type(exc).__name__}: {exc}"]
        return reasons + own

    def prepare(self, case: Case, inputs: AttentionInputs):
        fmha = _import_fmha()
        q, k, v = inputs.tensors()                            # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        if is_ragged(case):
            _, q, k, v = packed_inputs(case, q, k, v)         # (1, H, Σq, d), (1, Hkv, Σm, d), (1, Hkv, Σm, d_v)
            bias = block_diagonal_bias(fmha, case)
        else:
            bias = attention_bias(fmha, case, q.dtype, q.device)
        query, key, value = xformers_layout(q, k, v)          # views: BMHK, or BMGHK for grouped heads
        heads = case.heads

        def forward() -> torch.Tensor:
            out = fmha.memory_efficient_attention(query, key, value, attn_bias=bias)   # (B, N, H, d_v) or (B, N, Hkv, G, d_v)
            return out.reshape(out.shape[0], out.shape[1], heads, -1).transpose(1, 2)    # (B, H, N, d_v)

        return forward

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case, one_call=True)

    def memory_model(self, case: Case) -> int:
        """The output and float32 log-sum-exp, plus a dense bias's padded (H, N, M') block (one (N, M') for a mask)."""
        model = super().memory_model(case)
        if not needs_dense_bias(case):
            return model
        heads = case.heads if case.score_mod == "alibi" else 1
        padded = -(-case.kv_len // KEY_ALIGNMENT) * KEY_ALIGNMENT
        return model + heads * case.seq_len * padded * case.element_bytes

"""The `flash-attn` package's FlashAttention-2 kernel (`flash_attn.flash_attn_func`).

out = softmax(mod(q kᵀ / √d) + mask) v. attnbench's q (B, H, N, d) and k, v
(B, Hkv, M, d) become flash-attn's (B, N, H, d) and (B, M, Hkv, d) layout by a
transpose that is a view: the kernel only needs the last dimension contiguous,
so no copy is made on the way in, and its (B, N, H, d) output is handed back
as a (B, H, N, d) view. The transposes run inside the timed callable, so
`fwd_bwd` backpropagates through them to the harness's inputs.

Everything else is one call's keyword arguments, built once in `prepare` by
`flash_attn_arguments(case)`, a pure function of the case (unit-tested without
a GPU). In flash-attn's own terms, with i' = i + M − N the end-aligned position:

- grouped heads (GQA/MQA) natively: k and v with Hkv heads, query head h
  reading head h // (H // Hkv), as attnbench defines it;
- causal: flash-attn >= 2.1 aligns the mask at the bottom right (query i sees
  keys j <= i'), attnbench's convention; a query that sees no key outputs 0;
- ``sliding_window:W``: ``window_size=(W, W)``, keys i' − W <= j <= i' + W
  (>= 2.3); with causal ``(W, 0)``;
- ``alibi``: ``alibi_slopes``, float32 (H,), a bias −slope_h·|i' − j| (>= 2.4),
  exactly attnbench's ALiBi;
- ``softcap:C``: ``softcap=C``, C·tanh(s / C) of the scaled score (>= 2.6).

A ragged batch (`lengths`) runs ``packed`` through ``flash_attn_varlen_func``:
q (Σq, H, d), k and v (Σm, Hkv, d) (views of the packed tokens), int32
cumulative offsets ``cu_seqlens_q``/``cu_seqlens_k`` (B + 1,), the longest
sequence's ``max_seqlen_q``/``max_seqlen_k``, and the same scale and causal
flag (bottom-right aligned in each sequence): `flash_attn_varlen_arguments(case)`,
a pure function unit-tested on CPU.
Paged (``page_size`` > 0): ``flash_attn_with_kvcache(q, k_pool, v_pool,
**flash_attn_kvcache_arguments(case, table))``, the pools in flash-attn's
own paged layout (num_pages, page_size, Hkv, d), read in place through
``block_table`` (B, P) int32 with ``cache_seqlens`` (B,) int32 = kv_len, so
the empty slots of the last page are never attended to; the causal mask is
aligned at the end of each sequence's cache, as attnbench's. flash-attn 2
takes a block table only with pages of a multiple of 256 keys (its C++
check: "Paged KV cache block size must be divisible by 256") and from
release 2.5; a page_size of 16 is declared unsupported, not padded.

What it cannot run, each said separately: no package, no CUDA device or one
older than Ampere (compute capability 8.0), dtypes other than float16 and
bfloat16, head_dim > 256 (backward with head_dim > 192 needs an A100/A800 or
H100/H800-class GPU), v_head_dim != head_dim, the document and prefix_lm masks
(see `mask_reason`), and an installed flash-attn older than a feature the case uses.
"""

from __future__ import annotations

import importlib.metadata
import math
import re

import torch

from attnbench import (
    AttentionInputs,
    Case,
    ExactSoftmaxKernel,
    alibi_slopes,
    case_softcap,
    case_window,
    is_ragged,
    packed_inputs,
    paged_cache,
    ragged_batch,
    ragged_execution,
)

MAX_HEAD_DIM = 256
MAX_BACKWARD_HEAD_DIM_CONSUMER = 192
PAGE_MULTIPLE = 256



def window_size(case: Case) -> tuple[int, int]:
    """flash-attn's (left, right): (-1, -1) for no window, (W, W) for ``sliding_window:W``, (W, 0) with causal."""
    window = case_window(case)
    if window is None:
        return (-1, -1)
    return (window, 0) if case.causal else (window, window)


def flash_attn_arguments(case: Case, device: torch.device | str | None = None) -> dict:
    """The keyword arguments of ``flash_attn_func`` that make it compute `case`'s function.

    softmax_scale 1/√d, causal, window_size (left, right), softcap (C, or 0.0 for
    none) and alibi_slopes (a float32 (H,) tensor on `device`, default the
    case's; None without ALiBi).
    """
    slopes = None
    if case.score_mod == "alibi":
        slopes = torch.tensor(alibi_slopes(case.heads), dtype=torch.float32,
                              device=case.device if device is None else device)          # (H,)
    cap = case_softcap(case)
    return {
        "softmax_scale": 1.0 / math.sqrt(case.head_dim),
        "causal": case.causal,
        "window_size": window_size(case),
        "softcap": 0.0 if cap is None else float(cap),
        "alibi_slopes": slopes,
    }


def flash_attn_varlen_arguments(case: Case, device: torch.device | str | None = None) -> dict:
    """The arguments of ``flash_attn_varlen_func`` besides q, k, v that make it compute a ragged `case`.

    cu_seqlens_q and cu_seqlens_k: int32 (B + 1,) cumulative offsets of the packed
    queries and keys (0 first); max_seqlen_q, max_seqlen_k: the longest sequence's;
    softmax_scale 1/√d and causal (aligned at the bottom right of each sequence).
    """
    batch = ragged_batch(case)
    where = case.device if device is None else device
    return {
        "cu_seqlens_q": torch.tensor(batch.cu_seqlens_q, dtype=torch.int32, device=where),   # (B + 1,)
        "cu_seqlens_k": torch.tensor(batch.cu_seqlens_k, dtype=torch.int32, device=where),   # (B + 1,)
        "max_seqlen_q": batch.max_queries,
        "max_seqlen_k": batch.max_keys,
        "softmax_scale": 1.0 / math.sqrt(case.head_dim),
        "causal": case.causal,
    }


def flash_attn_kvcache_arguments(case: Case, table: torch.Tensor) -> dict:
    """The keyword arguments of ``flash_attn_with_kvcache`` for `case`'s paged cache behind `table` (B, P).

    `flash_attn_arguments(case)` on `table`'s device, plus ``block_table``
    (the table as contiguous int32) and ``cache_seqlens`` (B,) int32, every
    sequence kv_len keys long.
    """
    arguments = flash_attn_arguments(case, device=table.device)
    arguments["block_table"] = table.to(torch.int32).contiguous()                              # (B, P)
    arguments["cache_seqlens"] = torch.full((case.batch,), case.kv_len, dtype=torch.int32, device=table.device)
    return arguments


def features_used(case: Case) -> list[tuple[str, tuple[int, int]]]:
    """Each flash-attn feature `case` needs, with the first release that has it (flash-attn's README changelog)."""
    used = []
    if case.causal and case.kv_len != case.seq_len:
        used.append(("the causal mask aligned at the bottom right (kv_len != seq_len)", (2, 1)))
    if case_window(case) is not None:
        used.append(("sliding-window attention (window_size)", (2, 3)))
    if case.score_mod == "alibi":
        used.append(("ALiBi (alibi_slopes)", (2, 4)))
    if case_softcap(case) is not None:
        used.append(("soft-capping (softcap)", (2, 6)))
    if case.page_size:
        used.append(("paged KV cache (flash_attn_with_kvcache's block_table)", (2, 5)))
    return used


def installed_version() -> tuple[int, int] | None:
    """(major, minor) of the installed flash-attn distribution, None when it is absent or unreadable."""
    try:
        text = importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def version_reasons(case: Case, version: tuple[int, int] | None) -> list[str]:
    """A sentence per feature of `case` that flash-attn `version` predates; none when the version is unknown."""
    if version is None:
        return []
    return [f"the installed flash-attn {version[0]}.{version[1]} has no {feature}, added in "
            f"flash-attn {release[0]}.{release[1]} (pip install -U flash-attn)"
            for feature, release in features_used(case) if version < release]


class FlashAttnPackage(ExactSoftmaxKernel):
    name = "flash-attn"
    family = "flash"
    description = ("flash-attn's FlashAttention-2 CUDA kernel (flash_attn_func), (B, N, H, d) layout via views; "
                   "grouped heads, sliding windows, ALiBi and soft-capping natively")
    devices = ("cuda",)
    dtypes = ("float16", "bfloat16")
    requires = ("flash-attn",)
    min_cuda_capability = (8, 0)                               # FlashAttention-2: Ampere, Ada, Hopper
    supports_gqa = True
    supports_paged_kv = True
    supported_masks = ("sliding_window",)
    supported_score_mods = ("alibi", "softcap")
    supports_lengths = True
    supported_layouts = ("packed",)
    layout_reason = "flash-attn takes a ragged batch packed (flash_attn_varlen_func's offsets), not {layout}"
    device_reason = "flash-attn is a CUDA-only kernel; it has no CPU implementation"
    dtype_reason = "flash-attn takes float16 or bfloat16 inputs, not {dtype}"
    v_head_dim_reason = "flash-attn 2 needs q, k and v of one head dim (v_head_dim == head_dim)"
    mask_reason = ("flash_attn_func has no {kind} mask: it takes only a causal flag and a sliding window_size, "
                   "and documents would need flash_attn_varlen_func's packed sequences (masks it takes: {masks})")

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.head_dim > MAX_HEAD_DIM:
            reasons.append(f"flash-attn supports head_dim up to {MAX_HEAD_DIM}, not {case.head_dim}")
        if case.device == "cuda" and torch.cuda.is_available():
            capability = torch.cuda.get_device_capability()
            if (capability >= self.min_cuda_capability and case.mode == "fwd_bwd"
                    and case.head_dim > MAX_BACKWARD_HEAD_DIM_CONSUMER and capability not in ((8, 0), (9, 0))):
                reasons.append(f"flash-attn's backward with head_dim > {MAX_BACKWARD_HEAD_DIM_CONSUMER} "
                               "needs an A100/A800 or H100/H800 (compute capability 8.0 or 9.0)")
        if case.page_size % PAGE_MULTIPLE:
            reasons.append(f"flash-attn 2 reads a paged KV cache only in pages of a multiple of {PAGE_MULTIPLE} keys, "
                           f"not page_size {case.page_size}; use page_size 256 (naive, sdpa-*, flash-decoding and "
                           "flex take any page size)")
        reasons += version_reasons(case, installed_version())
        return reasons

    def prepare(self, case: Case, inputs: AttentionInputs):
        from flash_attn import flash_attn_func

        q, k, v = inputs.tensors()                             # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d)
        if is_ragged(case):
            return self._prepare_varlen(case, q, k, v)
        if case.page_size:
            return _prepare_paged(case, q, k, v)
        arguments = flash_attn_arguments(case, device=q.device)

        def forward() -> torch.Tensor:
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                  **arguments)                                          # (B, N, H, d)
            return out.transpose(1, 2)                                                  # (B, H, N, d), a view

        return forward

    def _prepare_varlen(self, case: Case, q, k, v):
        from flash_attn import flash_attn_varlen_func

        _, q, k, v = packed_inputs(case, q, k, v)             # (1, H, Σq, d), (1, Hkv, Σm, d), (1, Hkv, Σm, d)
        query, key, value = q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1)   # (Σq, H, d), views
        arguments = flash_attn_varlen_arguments(case, device=q.device)

        def forward() -> torch.Tensor:
            out = flash_attn_varlen_func(query, key, value, **arguments)             # (Σq, H, d)
            return out.transpose(0, 1)[None]                                        # (1, H, Σq, d), a view

        return forward

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case, one_call=True)


def _prepare_paged(case: Case, q, k, v):
    from flash_attn import flash_attn_with_kvcache

    k_pool, v_pool, table = paged_cache(case, k, v)        # (B·P, page_size, Hkv, d), (B, P): flash-attn's layout
    arguments = flash_attn_kvcache_arguments(case, table)

    def forward() -> torch.Tensor:
        out = flash_attn_with_kvcache(q.transpose(1, 2), k_pool, v_pool, **arguments)   # (B, N, H, d)
        return out.transpose(1, 2)                                                      # (B, H, N, d), a view

    return forward

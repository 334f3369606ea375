"""FlexAttention (`torch.nn.attention.flex_attention`) compiled with `torch.compile`.

out = softmax(mod(q kᵀ / √d) + mask) v with q (B, H, N, d), k (B, Hkv, M, d) and
v (B, Hkv, M, d_v), flex_attention's own layout (grouped heads through
``enable_gqa``; mod is the case's score mod, passed as Flex's ``score_mod``). A causal case is a block mask built from the
mask function `kv <= q + (M − N)` (attnbench's end-aligned convention), so
key blocks that no query of a query block can see are skipped, not just
masked; a query that sees no key outputs 0.

`prepare` builds the block mask, compiles flex_attention (one static-shape
graph per case) and calls it once in the same grad mode the harness times in
(inference mode for `fwd`, a forward and backward for `fwd_bwd`), so the
compile and autotuning stay out of the timed region.

Paged (``page_size`` > 0): Flex attends to the whole page pool, k and v
(1, Hkv, L, d) with L = num_pages·page_size shared by the batch, through a
mask over physical slots s that maps each back to its sequence and logical
position (`page_owner_and_position`): s is visible to sequence b iff its
page belongs to b, its position j = start[s // page_size] + s % page_size is
below kv_len, and the case's own mask (causal, the mask axis) allows j; the
score mod sees j too. The block mask's key blocks are pages when page_size is
a power of two from 16 to 128 on CPU, so other sequences' pages are skipped
whole; otherwise (and always on CUDA, where Triton's tiles are larger) blocks
of 128 slots, correct but partly spent on other sequences' pages.

On CPU the compiled kernel is an inference-only C++ template (it needs AVX2
and a C++ compiler, and has no backward; with head_dim <= 16 it returned wrong
values, some NaN, in our measurements, so those cells are declared unsupported); on CUDA it is a Triton kernel and
supports the backward. float16, bfloat16 and float32 only.

A ragged batch (`lengths`) runs ``packed`` as one call over the sequences'
tokens end to end, under a document mask (a query sees its own sequence's
keys: `attnbench.attention.ragged.document_mask_mod`), so blocks between
sequences are skipped; ``padded`` as one call over (B, H, N_max, d) whose
block mask hides each sequence's padding, per batch entry.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

import torch

from attnbench import (
    AttentionInputs,
    Case,
    ExactSoftmaxKernel,
    RaggedBatch,
    case_mask_mod,
    case_score_mod,
    case_sinks,
    document_mask_mod,
    is_ragged,
    packed_inputs,
    page_owner_and_position,
    paged_cache,
    ragged_batch,
    ragged_execution,
    rescale_for_sinks,
)

# Every case compiles its own static-shape graph; a sweep compiles more than
# dynamo's default recompile limit (8), after which it would silently fall back to eager.
RECOMPILE_LIMIT = 256
# The compiled CPU kernel returned wrong values, some NaN, for head_dim 8 and 16 on
# short sequences (torch 2.13, seq_len/kv_len 40-200); 20, 24, 32 and 64 matched SDPA.
CPU_MIN_SAFE_HEAD_DIM = 16
DEFAULT_BLOCK = 128


def _flex_module_available() -> bool:
    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    except ModuleNotFoundError:
        return False


def _cpu_has_avx2() -> bool:
    import os

    checker = getattr(torch.cpu, "_is_avx2_supported", None)
    return (checker is None or checker()) and os.environ.get("ATEN_CPU_CAPABILITY") != "default"


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
            return


def _with_lse(compiled, q, k, v, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, N, d_v), its row log-sum-exp (B, H, N)): `return_aux` where this torch has it, else `return_lse`."""
    from torch.nn.attention import flex_attention as flex

    if hasattr(flex, "AuxRequest"):
        out, aux = compiled(q, k, v, return_aux=flex.AuxRequest(lse=True), **options)
        return out, aux.lse
    return compiled(q, k, v, return_lse=True, **options)


class FlexAttention(ExactSoftmaxKernel):
    name = "flex"
    family = "flash"
    description = "torch.nn.attention.flex_attention under torch.compile; causal and masks via a block mask"
    dtypes = ("float32", "float16", "bfloat16")
    supported_masks = ("sliding_window", "document", "prefix_lm")
    supported_score_mods = ("alibi", "softcap")
    supports_gqa = True
    supports_v_head_dim = True
    supports_sinks = True
    supports_lengths = True
    supported_layouts = ("padded", "packed")
    supports_paged_kv = True
    compiles = True

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if not _flex_module_available():
            reasons.append(f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs torch >= 2.5)")
        if case.device == "cpu":
            if case.mode == "fwd_bwd":
                reasons.append("FlexAttention has no backward on CPU (inference only); fwd_bwd needs CUDA")
            if sys.platform == "darwin":
                reasons.append("compiled FlexAttention does not run on macOS CPUs")
            elif not _cpu_has_avx2():
                reasons.append("compiled FlexAttention on CPU needs AVX2 (and ATEN_CPU_CAPABILITY not 'default')")
            if case.head_dim <= CPU_MIN_SAFE_HEAD_DIM:
                reasons.append(f"compiled FlexAttention on CPU gives wrong outputs (at times NaN) for head_dim <= "
                               f"{CPU_MIN_SAFE_HEAD_DIM} (measured with torch {torch.__version__}); use head_dim >= 20")
            if case.sinks != "none":
                reasons.append("compiled FlexAttention on CPU does not return its log-sum-exp (inductor's CPU flex "
                               "kernel refuses it), which sinks need; flex takes sinks on CUDA, naive and sdpa-math here")
            if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
                reasons.append("torch.compile's CPU backend needs a C++ compiler (g++ or clang++), none is on PATH")
        elif case.device == "cuda" and importlib.util.find_spec("triton") is None:
            reasons.append("compiled FlexAttention on CUDA needs Triton, which is not installed")
        return reasons

    def prepare(self, case: Case, inputs: AttentionInputs):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        q, k, v = inputs.tensors()
        block_mask = None
        mask_mod = case_mask_mod(case, device=case.device)        # causal and the mask axis, one predicate
        score_mod = case_score_mod(case, device=case.device)
        if is_ragged(case) and case.layout == "packed":
            batch, q, k, v = packed_inputs(case, q, k, v)          # (1, H, Σq, d), (1, Hkv, Σm, d), (1, Hkv, Σm, d_v)
            block_mask = create_block_mask(document_mask_mod(batch, device=case.device), B=None, H=None,
                                           Q_LEN=batch.total_queries, KV_LEN=batch.total_keys, device=case.device)
        elif is_ragged(case):
            batch = ragged_batch(case)
            q, k, v = q[:, :, :batch.max_queries], k[:, :, :batch.max_keys], v[:, :, :batch.max_keys]
            block_mask = create_block_mask(_padded_mask_mod(batch, case.device), B=batch.size, H=None,
                                           Q_LEN=batch.max_queries, KV_LEN=batch.max_keys, device=case.device)
        elif case.page_size:
            k, v, block_mask, score_mod = _paged_pool(case, k, v, mask_mod, score_mod)
        elif mask_mod is not None:
            block_mask = create_block_mask(mask_mod, B=None, H=None,
                                           Q_LEN=case.seq_len, KV_LEN=case.kv_len, device=case.device)
        grouped = case.kv_heads != case.heads
        _raise_recompile_limit()
        compiled = torch.compile(flex_attention, dynamic=False)

        sinks = case_sinks(case, device=case.device)                # (H,), or None

        def forward() -> torch.Tensor:
            if sinks is None:
                return compiled(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=grouped)
            out, lse = _with_lse(compiled, q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=grouped)
            return rescale_for_sinks(out, lse, sinks)               # out · σ(lse − s_h): exp(s_h) in each denominator

        # Compile now, in the grad mode the harness will time in.
        if case.mode == "fwd":
            with torch.inference_mode():
                forward()
        elif any(t.requires_grad for t in (q, k, v)):
            out = forward()
            torch.autograd.grad(out, [t for t in (q, k, v) if t.requires_grad], torch.ones_like(out))
        return forward

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case, one_call=True)

    def memory_model(self, case: Case) -> int:
        """Output, the float32 log-sum-exp, and the block mask's per-block index tables (paged: per sequence)."""
        q_blocks, kv_blocks = -(-case.seq_len // 128), -(-case.kv_len // 128)
        block_mask = 4 * 4 * q_blocks * kv_blocks if case.causal or case.mask != "none" else 0
        return super().memory_model(case) + block_mask


def _padded_mask_mod(batch: RaggedBatch, device):
    """A Flex ``mask_mod`` over a padded batch: query i of entry b sees key j when i < q_b, j < m_b and,
    causal, j <= i + m_b − q_b (a padding row sees nothing and outputs 0)."""
    queries = torch.tensor(batch.queries, device=device)                     # (B,)
    keys = torch.tensor(batch.keys, device=device)                           # (B,)
    causal = batch.causal

    def padded(b, h, q_idx, kv_idx):
        real = (q_idx < queries[b]) & (kv_idx < keys[b])
        return real & (kv_idx <= q_idx + keys[b] - queries[b]) if causal else real

    return padded


def paged_block_size(case: Case) -> int:
    """The key block of a paged case's block mask: the page where Flex's CPU kernel takes it, else 128."""
    size = case.page_size
    if case.device == "cpu" and 16 <= size <= DEFAULT_BLOCK and size & (size - 1) == 0:
        return size
    return DEFAULT_BLOCK


def _paged_pool(case: Case, k, v, mask_mod, score_mod):
    """k, v as the page pools (1, Hkv, L, ·), a block mask over physical slots and the score mod on logical keys."""
    from torch.nn.attention.flex_attention import create_block_mask

    k_pool, v_pool, table = paged_cache(case, k, v)               # (B·P, page_size, Hkv, ·), (B, P)
    owner, start = page_owner_and_position(table, case.page_size)  # (B·P,), (B·P,)
    page_size, kv_len = case.page_size, case.kv_len
    slots = k_pool.shape[0] * page_size                            # L

    def logical(kv_idx):
        return start[kv_idx // page_size] + kv_idx % page_size    # the key's position in its own sequence

    def paged_mask(b, h, q_idx, kv_idx):
        mine = (owner[kv_idx // page_size] == b) & (logical(kv_idx) < kv_len)
        return mine if mask_mod is None else mine & mask_mod(b, h, q_idx, logical(kv_idx))

    paged_score_mod = None
    if score_mod is not None:
        def paged_score_mod(score, b, h, q_idx, kv_idx):
            return score_mod(score, b, h, q_idx, logical(kv_idx))

    block_mask = create_block_mask(paged_mask, B=case.batch, H=None, Q_LEN=case.seq_len, KV_LEN=slots,
                                   device=case.device, BLOCK_SIZE=(DEFAULT_BLOCK, paged_block_size(case)))
    k_slots = k_pool.view(1, slots, *k_pool.shape[2:]).transpose(1, 2)   # (1, Hkv, L, d): one pool for the batch
    v_slots = v_pool.view(1, slots, *v_pool.shape[2:]).transpose(1, 2)   # (1, Hkv, L, d_v)
    return k_slots, v_slots, block_mask, paged_score_mod

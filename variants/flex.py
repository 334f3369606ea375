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

On CPU the compiled kernel is an inference-only C++ template (it needs AVX2
and a C++ compiler, and has no backward; with head_dim <= 16 it returned wrong
values, some NaN, in our measurements, so those cells are declared unsupported); on CUDA it is a Triton kernel and
supports the backward. float16, bfloat16 and float32 only.
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
    case_mask_mod,
    case_score_mod,
    case_sinks,
    rescale_for_sinks,
)

# Every case compiles its own static-shape graph; a sweep compiles more than
# dynamo's default recompile limit (8), after which it would silently fall back to eager.
RECOMPILE_LIMIT = 256
# The compiled CPU kernel returned wrong values, some NaN, for head_dim 8 and 16 on
# short sequences (torch 2.13, seq_len/kv_len 40-200); 20, 24, 32 and 64 matched SDPA.
CPU_MIN_SAFE_HEAD_DIM = 16


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
        if mask_mod is not None:
            block_mask = create_block_mask(mask_mod, B=None, H=None,
                                           Q_LEN=case.seq_len, KV_LEN=case.kv_len, device=case.device)
        score_mod = case_score_mod(case, device=case.device)
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

    def memory_model(self, case: Case) -> int:
        """Output, the float32 log-sum-exp, and the block mask's per-block index tables."""
        q_blocks, kv_blocks = -(-case.seq_len // 128), -(-case.kv_len // 128)
        block_mask = 4 * 4 * q_blocks * kv_blocks if case.causal or case.mask != "none" else 0
        return super().memory_model(case) + block_mask

"""PyTorch's scaled_dot_product_attention, one variant per backend.

Each variant pins SDPA to one backend with `torch.nn.attention.sdpa_kernel`,
so a cell measures that kernel or says why it cannot run, instead of silently
falling back to another. Shapes are SDPA's own: (B, H, N, d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness import AttentionInputs, Case, ExactSoftmaxKernel, attention_flops, causal_mask


class _SDPABackend(ExactSoftmaxKernel):
    family = "flash"
    backend_name = ""
    flash_like = True

    def _backend(self):
        from torch.nn.attention import SDPBackend

        return getattr(SDPBackend, self.backend_name)

    def prepare(self, case: Case, inputs: AttentionInputs):
        from torch.nn.attention import sdpa_kernel

        q, k, v = inputs.tensors()
        backend = self._backend()
        is_causal = case.causal

        if is_causal and case.kv_len != case.seq_len:
            # SDPA's is_causal aligns the mask at the top left; attnbench aligns it at the end.
            mask = causal_mask(case.seq_len, case.kv_len, device=q.device)       # (N, M)

            def forward() -> torch.Tensor:
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            def forward() -> torch.Tensor:
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)

        return forward

    def memory_model(self, case: Case) -> int:
        if self.flash_like:
            return super().memory_model(case)
        output = case.batch * case.heads * case.seq_len * case.head_dim * case.element_bytes
        return output + 2 * case.batch * case.heads * case.seq_len * case.kv_len * case.element_bytes


class SDPAMath(_SDPABackend):
    name = "sdpa-math"
    backend_name = "MATH"
    flash_like = False
    description = "SDPA's math backend: the composite-op reference implementation"

    def performed_flops(self, case: Case) -> int:
        """The composite ops form the full N×M scores (two bmm) and mask them afterwards."""
        return attention_flops(case, pairs=case.seq_len * case.kv_len)


class SDPAFlash(_SDPABackend):
    name = "sdpa-flash"
    backend_name = "FLASH_ATTENTION"
    description = "SDPA's FlashAttention backend (FlashAttention-2 on CUDA, a tiled C++ kernel on CPU)"

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.device == "cuda":
            if case.dtype not in ("float16", "bfloat16"):
                reasons.append(f"the CUDA flash kernel takes float16 or bfloat16, not {case.dtype}")
            if case.head_dim > 256 or case.head_dim % 8:
                reasons.append(f"the CUDA flash kernel needs head_dim a multiple of 8 up to 256, not {case.head_dim}")
        if case.causal and case.kv_len != case.seq_len:
            reasons.append("an explicit causal mask (kv_len != seq_len) is not supported by the flash backend")
        return reasons


class SDPAEfficient(_SDPABackend):
    name = "sdpa-efficient"
    backend_name = "EFFICIENT_ATTENTION"
    devices = ("cuda",)
    description = "SDPA's memory-efficient backend (xformers' cutlass kernel, CUDA only)"
    device_reason = "PyTorch's memory-efficient SDPA backend has no CPU kernel (CUDA only)"


class SDPACudnn(_SDPABackend):
    name = "sdpa-cudnn"
    backend_name = "CUDNN_ATTENTION"
    devices = ("cuda",)
    dtypes = ("float16", "bfloat16")
    description = "SDPA's cuDNN backend (CUDA, float16/bfloat16, recent GPUs)"
    device_reason = "PyTorch's cuDNN SDPA backend needs cuDNN on a CUDA device; there is no CPU kernel"
    min_cuda_capability = (8, 0)

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.head_dim > 128 or case.head_dim % 8:
            reasons.append(f"the cuDNN backend needs head_dim a multiple of 8 up to 128, not {case.head_dim}")
        return reasons

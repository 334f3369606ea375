"""The `flash-attn` package's FlashAttention-2 kernel (`flash_attn.flash_attn_func`).

out = softmax(q kᵀ / √d + mask) v. attnbench's q (B, H, N, d) and k, v
(B, H, M, d) become flash-attn's (B, N, H, d) layout by a transpose that is a
view: the kernel only needs the last dimension contiguous, so no copy is made
on the way in, and its (B, N, H, d) output is handed back as a (B, H, N, d)
view. The transposes run inside the timed callable, so `fwd_bwd` backpropagates
through them to the harness's inputs.

Causal: flash-attn >= 2.1 aligns the causal mask at the bottom right (query i
sees keys j <= i + M − N), which is attnbench's convention; a query that sees
no key outputs 0.

What it needs, each checked separately: the package installed, a CUDA device
(Ampere, Ada or Hopper: compute capability 8.0 or newer), float16 or bfloat16
inputs, and head_dim <= 256 (backward with head_dim > 192 needs an A100/A800
or H100/H800-class GPU, compute capability 8.0 or 9.0).
"""

from __future__ import annotations

import torch

from harness import AttentionInputs, Case, ExactSoftmaxKernel

MAX_HEAD_DIM = 256
MAX_BACKWARD_HEAD_DIM_CONSUMER = 192


class FlashAttnPackage(ExactSoftmaxKernel):
    name = "flash-attn"
    family = "flash"
    description = "flash-attn's FlashAttention-2 CUDA kernel (flash_attn_func), (B, N, H, d) layout via views"
    devices = ("cuda",)
    dtypes = ("float16", "bfloat16")
    requires = ("flash-attn",)
    min_cuda_capability = (8, 0)                               # FlashAttention-2: Ampere, Ada, Hopper
    device_reason = "flash-attn is a CUDA-only kernel; it has no CPU implementation"
    dtype_reason = "flash-attn takes float16 or bfloat16 inputs, not {dtype}"

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
        return reasons

    def prepare(self, case: Case, inputs: AttentionInputs):
        from flash_attn import flash_attn_func

        q, k, v = inputs.tensors()
        causal = case.causal

        def forward() -> torch.Tensor:
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                  causal=causal)                                        # (B, N, H, d)
            return out.transpose(1, 2)                                                  # (B, H, N, d), a view

        return forward




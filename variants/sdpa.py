"""PyTorch's scaled_dot_product_attention, one variant per backend.

Each variant pins SDPA to one backend with `torch.nn.attention.sdpa_kernel`,
so a cell measures that kernel or says why it cannot run, instead of silently
falling back to another. Shapes are SDPA's own: q (B, H, N, d), k (B, Hkv, M, d),
v (B, Hkv, M, d_v). Grouped heads go through ``enable_gqa=True`` (no copy of k
and v); a causal mask with kv_len != seq_len is `causal_lower_right`, aligned at
the end as attnbench defines it (SDPA's ``is_causal`` aligns at the top left).
Masks are the case's boolean (N, M) matrix; ALiBi is a float (H, N, M) mask,
the bias with -inf where the mask hides a key. SDPA has no place for a soft
cap: it is a nonlinear function of the score, not a bias. A ragged batch
(`lengths`) runs ``padded`` as one call with a (B, 1, N_max, M_max) boolean mask
hiding each sequence's padding, or ``packed`` as one call per sequence on views
of the packed tokens (`attnbench.attention.ragged`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench import (
    AttentionInputs,
    Case,
    ExactSoftmaxKernel,
    attention_flops,
    case_mask_matrix,
    case_sinks,
    is_ragged,
    kv_reader,
    padded_allowed,
    per_sequence,
    ragged_batch,
    ragged_execution,
    score_bias,
)


class _SDPABackend(ExactSoftmaxKernel):
    family = "flash"
    backend_name = ""
    flash_like = True
    supports_gqa = True
    supports_paged_kv = True
    supported_masks = ("sliding_window", "document", "prefix_lm")
    supported_score_mods = ("alibi",)
    score_mod_reason = ("SDPA takes a boolean or additive float mask, which cannot express {kind} "
                        "(score mods it takes: {mods}); use naive or flex")
    gqa_reason = "this SDPA backend does not take enable_gqa (grouped or multi-query heads)"
    supports_lengths = True
    supported_layouts = ("padded", "packed")

    def _backend(self):
        from torch.nn.attention import SDPBackend

        return getattr(SDPBackend, self.backend_name)

    def prepare(self, case: Case, inputs: AttentionInputs):
        from torch.nn.attention import sdpa_kernel
        from torch.nn.attention.bias import causal_lower_right

        q, k, v = inputs.tensors()                    # (B, H, N, d), (B, Hkv, M, d), (B, Hkv, M, d_v)
        if is_ragged(case):
            return self._prepare_ragged(case, inputs)
        read_kv = kv_reader(case, k, v)               # k, v, or a paged cache's pages gathered
        backend = self._backend()
        grouped = case.kv_heads != case.heads
        is_causal = case.causal

        bias = score_bias(case, dtype=q.dtype, device=q.device)                   # (H, N, M) ALiBi, or None
        sinks = case_sinks(case, device=q.device)                                  # (H,), or None
        if sinks is not None:
            return self._forward_with_sinks(case, q, read_kv, backend, grouped, bias, sinks)
        allowed = case_mask_matrix(case, device=q.device) if case.mask != "none" or bias is not None else None
        if bias is not None:
            mask = (bias if allowed is None else bias.masked_fill(~allowed, float("-inf")))[None]   # (1, H, N, M)
        elif allowed is not None:
            mask = allowed                                                         # (N, M) bool
        elif is_causal and case.kv_len != case.seq_len:
            # SDPA's is_causal aligns the mask at the top left; attnbench aligns it at the end.
            mask = causal_lower_right(case.seq_len, case.kv_len)                  # (N, M), lazily
        else:
            mask = None

        if mask is None:
            def forward() -> torch.Tensor:
                k, v = read_kv()
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=grouped)
        else:
            def forward() -> torch.Tensor:
                k, v = read_kv()
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)

        return forward

    def _prepare_ragged(self, case: Case, inputs: AttentionInputs):
        from torch.nn.attention import sdpa_kernel

        q, k, v = inputs.tensors()
        if case.layout == "packed":
            return per_sequence(case, q, k, v, lambda one, *qkv: self.prepare(one, AttentionInputs(*qkv)))
        batch = ragged_batch(case)
        q, k, v = q[:, :, :batch.max_queries], k[:, :, :batch.max_keys], v[:, :, :batch.max_keys]   # cut to the longest
        mask = padded_allowed(batch, device=q.device)                              # (B, 1, N_max, M_max) bool
        backend, grouped = self._backend(), case.kv_heads != case.heads

        def forward() -> torch.Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)   # (B, H, N_max, d_v)

        return forward

    def execution(self, case: Case) -> str | None:
        return ragged_execution(case)

    @staticmethod
    def _forward_with_sinks(case, q, read_kv, backend, grouped, bias, sinks):
        """Sinks as one more key whose value is zero and whose score is s_h, through the additive mask:
        q·0 = 0, plus the mask's s_h, puts exp(s_h) in every row's denominator and nothing in its numerator."""
        from torch.nn.attention import sdpa_kernel

        scores_mask = torch.zeros(case.heads, case.seq_len, case.kv_len, dtype=q.dtype, device=q.device) \
            if bias is None else bias                                             # (H, N, M)
        allowed = case_mask_matrix(case, device=q.device)                         # (N, M) causal and mask, or None
        if allowed is not None:
            scores_mask = scores_mask.masked_fill(~allowed, float("-inf"))
        sink_scores = sinks.to(q.dtype).view(-1, 1, 1).expand(case.heads, case.seq_len, 1)   # (H, N, 1)
        mask = torch.cat([scores_mask, sink_scores], dim=-1)[None]                # (1, H, N, M + 1)
        k, v = read_kv()
        k_sink = k.new_zeros(*k.shape[:-2], 1, k.shape[-1])                        # (B, Hkv, 1, d)
        v_sink = v.new_zeros(*v.shape[:-2], 1, v.shape[-1])                        # (B, Hkv, 1, d_v)

        def forward() -> torch.Tensor:
            k, v = read_kv()
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, torch.cat([k, k_sink], dim=-2), torch.cat([v, v_sink], dim=-2),
                                                      attn_mask=mask, enable_gqa=grouped)

        return forward

    def memory_model(self, case: Case) -> int:
        if self.flash_like:
            return super().memory_model(case)
        output = case.output_bytes
        if case.score_mod != "none":
            output += case.heads * case.seq_len * case.kv_len * case.element_bytes
        return output + 2 * case.batch * case.heads * case.seq_len * case.kv_len * case.element_bytes


class SDPAMath(_SDPABackend):
    name = "sdpa-math"
    backend_name = "MATH"
    flash_like = False
    supports_v_head_dim = True
    supports_sinks = True
    description = "SDPA's math backend: the composite-op reference implementation"

    def performed_flops(self, case: Case) -> int:
        """The composite ops form the full N×M scores (two bmm) and mask them afterwards (a ragged batch: the
        rectangles its layout forms)."""
        if is_ragged(case):
            return attention_flops(case, batch_pairs=ragged_batch(case).rectangle_pairs(case.layout))
        return attention_flops(case, pairs=case.seq_len * case.kv_len)


class SDPAFlash(_SDPABackend):
    name = "sdpa-flash"
    backend_name = "FLASH_ATTENTION"
    description = "SDPA's FlashAttention backend (FlashAttention-2 on CUDA, a tiled C++ kernel on CPU)"
    v_head_dim_reason = "the flash backend needs q, k and v of one head dim (v_head_dim == head_dim)"

    def unsupported_reasons(self, case: Case) -> list[str]:
        reasons = super().unsupported_reasons(case)
        if case.device == "cuda":
            if case.dtype not in ("float16", "bfloat16"):
                reasons.append(f"the CUDA flash kernel takes float16 or bfloat16, not {case.dtype}")
            if case.head_dim > 256 or case.head_dim % 8:
                reasons.append(f"the CUDA flash kernel needs head_dim a multiple of 8 up to 256, not {case.head_dim}")
        if case.causal and case.kv_len != case.seq_len and case.device == "cuda":
            reasons.append("the CUDA flash backend takes no end-aligned causal mask (kv_len != seq_len); "
                           "use sdpa-math or flash-attn")
        if case.device == "cuda" and is_ragged(case) and case.layout == "padded":
            reasons.append("the CUDA flash backend takes no mask, which a padded ragged batch needs; "
                           "use layout = packed, or flash-attn's varlen entry")
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

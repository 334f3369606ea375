"""xFormers' `memory_efficient_attention` (xformers.ops), dispatched by xFormers itself.

out = softmax(q kᵀ / √d + bias) v. attnbench's q (B, H, N, d) and k, v
(B, H, M, d) become xFormers' (B, M, H, K) layout by a transpose that is a view
(xFormers only needs the last dimension contiguous), and the (B, N, H, d)
output is handed back as a (B, H, N, d) view.

Causal: `LowerTriangularMask` when N == M; when they differ, attnbench's
end-aligned mask (query i sees keys j <= i + M − N) is xFormers'
`LowerTriangularFromBottomRightMask` (plain `LowerTriangularMask` is aligned at
the top left). A query that sees no key outputs 0.

What it supports is xFormers' own answer: `unsupported_reasons` builds
`xformers.ops.fmha.Inputs` shaped like the case (zero-stride views, no memory),
asks every forward operator (and, for fwd_bwd, every backward operator) for
its `not_supported_reasons`, and when none can run returns each operator's
"`NAME` is not supported because: ..." text, plus why xFormers' C++/CUDA
extensions did not load if they did not.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from harness import AttentionInputs, Case, ExactSoftmaxKernel, torch_dtype


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


def _causal_bias(fmha, seq_len: int, kv_len: int):
    if seq_len == kv_len:
        return fmha.attn_bias.LowerTriangularMask()
    return fmha.attn_bias.LowerTriangularFromBottomRightMask()


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


def _probe_inputs(fmha, case: Case):
    """fmha.Inputs with the case's shapes, dtype, device and layout, backed by one (B, 1, H, d) row each."""
    dtype = torch_dtype(case.dtype)

    def probe(length: int) -> torch.Tensor:
        row = torch.empty(case.batch, 1, case.heads, case.head_dim, dtype=dtype, device=case.device)
        return row.expand(case.batch, length, case.heads, case.head_dim)           # (B, L, H, d), stride 0 on L

    bias = _causal_bias(fmha, case.seq_len, case.kv_len) if case.causal else None
    return fmha.Inputs(query=probe(case.seq_len), key=probe(case.kv_len), value=probe(case.kv_len),
                       attn_bias=bias)


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
    description = "xformers.ops.memory_efficient_attention, (B, M, H, K) layout via views, xFormers' dispatch"
    dtypes = ("float32", "float16", "bfloat16")
    requires = ("xformers",)

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
        q, k, v = inputs.tensors()
        bias = _causal_bias(fmha, case.seq_len, case.kv_len) if case.causal else None

        def forward() -> torch.Tensor:
            out = fmha.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_bias=bias)                      # (B, N, H, d)
            return out.transpose(1, 2)                                                 # (B, H, N, d), a view

        return forward



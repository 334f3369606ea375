"""What flash-attn's varlen entry and xFormers' block-diagonal masks are asked to compute on a ragged batch.

`flash_attn_varlen_arguments(case)` is checked against the semantics flash-attn's docstring gives
``flash_attn_varlen_func`` (written out below: sequence b is rows cu_seqlens_q[b]:cu_seqlens_q[b + 1] of
q and cu_seqlens_k[b]:cu_seqlens_k[b + 1] of k and v; causal aligned at the bottom right), which must give
the per-sequence float64 reference. xFormers imports on CPU: `block_diagonal_bias` is materialized and
compared with the document mask over the packed tokens. The kernels themselves run under the `cuda` marker.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from tiny_suites import measure_accurate

from attnbench.attention.masks import mask_matrix
from attnbench.attention.ragged import document_mask_mod, packed_inputs, ragged_reference
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.kinds.lengths.batch import ragged_batch
from attnbench.measure.inputs import make_inputs
from attnbench.variants import flash_attn_pkg, xformers_mea

REGISTRY = default_registry()
FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False,
                       telemetry=False)
BATCHES = [dict(lengths="lognormal:20,0.8", batch=6), dict(lengths="mixed:2,48,4,30", batch=6),
           dict(lengths="uniform:1-5", batch=3)]


def ragged(variant: str, causal: bool, **fields) -> Case:
    return Case(variant=variant, seq_len=48, heads=4, kv_heads=2, head_dim=16, layout="packed", causal=causal, seed=2,
                **fields)


def varlen_by_its_docstring(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal):
    """flash_attn_varlen_func's documented semantics, one sequence and one row at a time, in float64.

    q (total_q, H, d), k and v (total_k, Hkv, d); head h reads key/value head h // (H / Hkv); with causal,
    row i of a sequence of q queries and m keys sees keys j <= i + m - q (bottom-right alignment).
    """
    groups = q.shape[1] // k.shape[1]
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float64)
    for b in range(len(cu_seqlens_q) - 1):
        q0, q1, k0, k1 = (int(x) for x in (cu_seqlens_q[b], cu_seqlens_q[b + 1], cu_seqlens_k[b], cu_seqlens_k[b + 1]))
        assert q1 - q0 <= max_seqlen_q and k1 - k0 <= max_seqlen_k
        for h in range(q.shape[1]):
            for i in range(q1 - q0):
                stop = min(k1 - k0, i + 1 + (k1 - k0) - (q1 - q0)) if causal else k1 - k0
                scores = q[q0 + i, h] @ k[k0:k0 + stop, h // groups].T * softmax_scale        # (stop,)
                out[q0 + i, h] = torch.softmax(scores, dim=0) @ v[k0:k0 + stop, h // groups]
    return out


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("fields", BATCHES, ids=lambda f: f["lengths"])
def test_flash_attn_varlen_arguments_compute_the_ragged_reference(fields, causal):
    case = ragged("flash-attn", causal, **fields)
    arguments = flash_attn_pkg.flash_attn_varlen_arguments(case, device="cpu")
    batch = ragged_batch(case)
    assert arguments["cu_seqlens_q"].dtype == arguments["cu_seqlens_k"].dtype == torch.int32
    assert arguments["cu_seqlens_q"].tolist() == [0, *torch.tensor(batch.queries).cumsum(0).tolist()]
    assert arguments["max_seqlen_q"] == max(batch.queries) and arguments["max_seqlen_k"] == max(batch.keys)
    assert arguments["softmax_scale"] == 1 / math.sqrt(16)
    inputs = make_inputs(case)
    _, q, k, v = packed_inputs(case, *(t.double() for t in inputs.tensors()))   # (1, H, Σq, d)...
    got = varlen_by_its_docstring(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), **arguments)
    expected = ragged_reference(case, REGISTRY.get("naive"), *(t.double() for t in inputs.tensors()))   # (1, H, Σq, d)
    torch.testing.assert_close(got.transpose(0, 1)[None], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("xformers") is None, reason="xformers is not installed")
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("fields", BATCHES, ids=lambda f: f["lengths"])
def test_xformers_block_diagonal_bias_materializes_to_the_document_mask(fields, causal):
    case = ragged("xformers", causal, **fields)
    batch = ragged_batch(case)
    bias = xformers_mea.block_diagonal_bias(xformers_mea._import_fmha(), case)
    materialized = bias.materialize((batch.total_queries, batch.total_keys))              # 0 or −∞
    ours = mask_matrix(document_mask_mod(batch), batch.total_queries, batch.total_keys)    # (Σq, Σm) bool
    assert torch.equal(materialized == 0, ours)


def test_flash_attn_and_xformers_take_a_ragged_batch_packed_only():
    for name in ("flash-attn", "xformers"):
        case = Case(variant=name, seq_len=48, batch=4, lengths="uniform:4-48", layout="padded", device="cuda",
                    dtype="float16")
        assert any("packed" in reason for reason in REGISTRY.get(name).unsupported_reasons(case)), name


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["flash-attn", "xformers", "flex", "sdpa-flash", "sdpa-efficient", "flash-tiled"])
@pytest.mark.parametrize("fields", BATCHES[:2], ids=lambda f: f["lengths"])
def test_kernels_run_a_packed_ragged_batch_on_cuda(name, fields):
    case = Case(variant=name, device="cuda", dtype="float16", seq_len=48, heads=4, kv_heads=2, head_dim=64,
                layout="packed", causal=True, **fields)
    measure_accurate(case, REGISTRY.get(name), FAST)

"""What flash-tiled, flash-attn and xformers are asked to compute, checked without a GPU where it can be.

- flash-tiled runs here: its sliding-window tiles, grouped heads and value head dim
  against the float64 reference, and the key tiles it skips against FlopCounterMode.
- flash-attn is a CUDA kernel: `flash_attn_arguments(case)` is checked against the
  semantics flash-attn's docstrings give its arguments (written out below, one
  pair at a time), which must equal attnbench's mask and ALiBi bias.
- xformers imports on CPU: its bias objects are materialized and compared with
  `case_mask_matrix`, the dense bias with `score_bias`, and the BMGHK layout is
  checked to be views of the inputs; a plain float64 emulation of
  memory_efficient_attention on that layout and bias must give the reference.

Tests that run the kernels themselves are marked `cuda` and skip without a device.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from tiny_suites import measure_accurate, skip_unless_supported
from torch.utils.flop_counter import FlopCounterMode

from attnbench.attention.flops import attention_flops
from attnbench.attention.masks import case_mask_matrix
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import AttentionInputs
from attnbench.kinds.score_mods import alibi_slopes, score_bias
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs, upcast
from attnbench.variants import flash_attn_pkg, xformers_mea
from attnbench.variants.flash_tiled import key_range

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False, telemetry=False)
REGISTRY = default_registry()
# (seq_len, kv_len): square, more keys than queries (decode-like), fewer keys, one query.
SHAPES = [(16, 16), (5, 40), (40, 5), (1, 64)]
WINDOWS = ["none", "sliding_window:0", "sliding_window:3", "sliding_window:100"]


def allowed_or_all(case: Case) -> torch.Tensor:
    """(N, M) bool of the case's mask, all True when every key is visible."""
    allowed = case_mask_matrix(case)
    return torch.ones(case.seq_len, case.kv_len, dtype=torch.bool) if allowed is None else allowed


def shape_id(shape) -> str:
    return "N{}M{}".format(*shape)


# every window mask, full and causal, on every shape: the grid the kernels' mask arguments are checked on
WINDOW_GRID = [pytest.param(shape, causal, mask, id=f"{shape_id(shape)}-{'causal' if causal else 'full'}-{mask}")
               for mask in WINDOWS for causal in (False, True) for shape in SHAPES]


# ------------------------------------------------------------------ flash-tiled


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("fields", [
    dict(seq_len=64, mask="sliding_window:8"),
    dict(seq_len=64, mask="sliding_window:0"),
    dict(seq_len=20, kv_len=90, mask="sliding_window:12"),                # more keys than queries
    dict(seq_len=90, kv_len=20, mask="sliding_window:12"),                # fewer: early queries may see nothing
    dict(seq_len=4, kv_len=256, mask="sliding_window:32"),                # decode with a window
    dict(seq_len=64, heads=8, kv_heads=1, v_head_dim=24, mask="sliding_window:8"),
], ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_flash_tiled_computes_the_sliding_window_function(one_thread, fields, causal):
    fields = {"heads": 4, "kv_heads": 2, "head_dim": 16, **fields}
    case = Case(variant="flash-tiled", causal=causal, params={"block": 16, "query_block": 24}, **fields)
    result = measure_case(case, REGISTRY.get("flash-tiled"), FAST)
    assert result.status == "ok", result.reason
    assert result.accuracy.ok is True, result.accuracy.failures
    assert result.flops == attention_flops(case)


@pytest.mark.parametrize("mask", ["none", "sliding_window:5"])
def test_flash_tiled_grouped_gradients_in_float64(one_thread, mask):
    """dk and dv of a group sum over its query heads: exact against autograd through the reference."""
    case = Case(variant="flash-tiled", seq_len=30, kv_len=44, heads=6, kv_heads=2, head_dim=8, v_head_dim=12,
                causal=True, mask=mask, dtype="float64", mode="fwd_bwd", params={"block": 7, "query_block": 5})
    variant = REGISTRY.get("flash-tiled")
    inputs = make_inputs(case, requires_grad=True)
    out = variant.prepare(case, inputs)()
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs.tensors(), grad_out)
    leaves = tuple(t.detach().requires_grad_() for t in inputs.tensors())
    want = torch.autograd.grad(variant.reference(case, AttentionInputs(*leaves)), leaves, grad_out)
    assert out.shape == (1, 6, 30, 12)
    for label, g, w in zip("qkv", got, want, strict=True):
        assert g.shape == w.shape and torch.allclose(g, w, atol=1e-12), f"d{label}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [(256, 256), (96, 160), (160, 96), (4, 256)], ids=shape_id)
def test_flash_tiled_skips_key_tiles_outside_the_window(one_thread, shape, causal):
    """The matmuls FlopCounterMode sees are performed_flops exactly, and a window cuts them."""
    seq_len, kv_len = shape
    variant = REGISTRY.get("flash-tiled")
    knobs = {"block": 16, "query_block": 32}
    windowed = Case(variant="flash-tiled", seq_len=seq_len, kv_len=kv_len, heads=4, kv_heads=2, head_dim=16,
                    causal=causal, mask="sliding_window:10", params=knobs)
    full = Case.from_dict({**windowed.to_dict(), "mask": "none"})
    inputs = make_inputs(windowed)
    forward = variant.prepare(windowed, inputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward()
    assert counter.get_total_flops() == variant.performed_flops(windowed)
    assert variant.flops(windowed) <= variant.performed_flops(windowed) < variant.performed_flops(full)
    # Each 32-query block sees at most 32 + 2·10 keys: the window, not the whole key axis.
    assert variant.performed_flops(windowed) <= attention_flops(windowed, pairs=seq_len * min(kv_len, 32 + 20))


def test_key_range_is_the_band_of_the_block():
    assert key_range(0, 8, 0, 100, causal=True, window=None) == (0, 8)
    assert key_range(40, 48, 0, 100, causal=True, window=5) == (35, 48)
    assert key_range(40, 48, 0, 100, causal=False, window=5) == (35, 53)
    assert key_range(0, 4, 252, 256, causal=True, window=None) == (0, 256)              # decode: every key
    assert key_range(0, 4, 252, 256, causal=True, window=3) == (249, 256)
    start, stop = key_range(0, 10, -20, 30, causal=True, window=None)                   # kv_len < seq_len
    assert stop <= start                                                                # these queries see nothing


def test_flash_tiled_says_why_for_what_it_lacks():
    variant = REGISTRY.get("flash-tiled")
    for mask in ("document:2", "prefix_lm:8"):
        reasons = variant.unsupported_reasons(Case(variant="flash-tiled", seq_len=64, mask=mask))
        assert any(f"has no {mask.partition(':')[0]} mask" in r and "naive" in r for r in reasons), reasons
    reasons = variant.unsupported_reasons(Case(variant="flash-tiled", seq_len=64, score_mod="alibi"))
    assert any("has no alibi score mod" in r for r in reasons), reasons
    assert not variant.unsupported_reasons(Case(variant="flash-tiled", seq_len=64, kv_heads=1, v_head_dim=32,
                                                mask="sliding_window:4", causal=True))


# ------------------------------------------------------------------ flash-attn


def flash_attn_visible(seq_len: int, kv_len: int, causal: bool, window_size: tuple[int, int]) -> torch.Tensor:
    """(N, M) bool as flash-attn's docstring defines it, one pair at a time.

    Bottom-right causal (j <= i + M − N), and a window (left, right) keeping
    i + M − N − left <= j <= i + M − N + right, -1 meaning unbounded.
    """
    left, right = window_size
    allowed = torch.zeros(seq_len, kv_len, dtype=torch.bool)
    for i in range(seq_len):
        shifted = i + kv_len - seq_len
        for j in range(kv_len):
            ok = not causal or j <= shifted
            ok = ok and (left < 0 or j >= shifted - left) and (right < 0 or j <= shifted + right)
            allowed[i, j] = ok
    return allowed


def flash_attn_alibi(slopes: torch.Tensor, seq_len: int, kv_len: int) -> torch.Tensor:
    """(H, N, M): flash-attn's documented ALiBi bias −slope·|i + M − N − j|."""
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(kv_len)[None, :]
    return -slopes.double()[:, None, None] * (i + kv_len - seq_len - j).abs()


@pytest.mark.parametrize(("shape", "causal", "mask"), WINDOW_GRID)
def test_flash_attn_window_and_causal_arguments_are_our_mask(shape, causal, mask):
    seq_len, kv_len = shape
    case = Case(variant="flash-attn", seq_len=seq_len, kv_len=kv_len, causal=causal, mask=mask)
    arguments = flash_attn_pkg.flash_attn_arguments(case)
    assert arguments["causal"] is causal
    assert torch.equal(flash_attn_visible(seq_len, kv_len, causal, arguments["window_size"]), allowed_or_all(case))


def test_flash_attn_window_size_values():
    def window(**fields):
        return flash_attn_pkg.flash_attn_arguments(Case(variant="flash-attn", seq_len=64, **fields))["window_size"]

    assert window() == (-1, -1) and window(causal=True) == (-1, -1)
    assert window(mask="sliding_window:16", causal=True) == (16, 0)
    assert window(mask="sliding_window:16") == (16, 16)


@pytest.mark.parametrize("heads", [8, 6, 1])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_flash_attn_alibi_slopes_give_our_bias(shape, heads):
    seq_len, kv_len = shape
    case = Case(variant="flash-attn", seq_len=seq_len, kv_len=kv_len, heads=heads, kv_heads=1, score_mod="alibi")
    arguments = flash_attn_pkg.flash_attn_arguments(case)
    slopes = arguments["alibi_slopes"]
    assert slopes.dtype == torch.float32 and slopes.shape == (heads,) and slopes.device.type == "cpu"
    assert slopes.tolist() == pytest.approx(alibi_slopes(heads), rel=1e-7)
    ours = score_bias(case, dtype=torch.float64)                                       # (H, N, M)
    assert torch.allclose(flash_attn_alibi(slopes, seq_len, kv_len), ours, rtol=1e-6, atol=0)
    assert arguments["softcap"] == 0.0


def test_flash_attn_softcap_scale_and_defaults():
    plain = flash_attn_pkg.flash_attn_arguments(Case(variant="flash-attn", seq_len=64, head_dim=80))
    assert plain == {"softmax_scale": 1 / math.sqrt(80), "causal": False, "window_size": (-1, -1),
                     "softcap": 0.0, "alibi_slopes": None}
    capped = flash_attn_pkg.flash_attn_arguments(Case(variant="flash-attn", seq_len=64, score_mod="softcap:30"))
    assert capped["softcap"] == 30.0 and isinstance(capped["softcap"], float) and capped["alibi_slopes"] is None


def test_flash_attn_declares_its_axes_and_says_why_not():
    variant = REGISTRY.get("flash-attn")
    assert variant.supports_gqa and not variant.supports_v_head_dim
    assert variant.supported_masks == ("sliding_window",) and variant.supported_score_mods == ("alibi", "softcap")

    def reasons(**fields):
        return variant.unsupported_reasons(Case(variant="flash-attn", seq_len=64, dtype="float16", **fields))

    base = reasons()
    for fields in (dict(kv_heads=2), dict(kv_heads=1, causal=True, mask="sliding_window:8"),
                   dict(score_mod="alibi"), dict(score_mod="softcap:20")):
        assert reasons(**fields) == base, fields                     # only what every CPU case has
    assert any("flash-attn 2 needs q, k and v of one head dim" in r for r in reasons(v_head_dim=32))
    for mask in ("document:2", "prefix_lm:8"):
        assert any(f"flash_attn_func has no {mask.partition(':')[0]} mask" in r
                   for r in reasons(mask=mask)), mask


def test_flash_attn_version_reasons():
    softcap = Case(variant="flash-attn", seq_len=64, score_mod="softcap:30")
    decode = Case(variant="flash-attn", seq_len=1, kv_len=64, causal=True, mask="sliding_window:8")
    assert flash_attn_pkg.version_reasons(softcap, None) == []
    assert flash_attn_pkg.version_reasons(softcap, (2, 6)) == []
    assert flash_attn_pkg.version_reasons(softcap, (2, 5)) == [
        "the installed flash-attn 2.5 has no soft-capping (softcap), added in flash-attn 2.6 (pip install -U flash-attn)"]
    old = flash_attn_pkg.version_reasons(decode, (2, 0))
    assert len(old) == 2 and "bottom right" in old[0] and "window_size" in old[1]
    assert flash_attn_pkg.version_reasons(decode, (2, 3)) == []
    assert flash_attn_pkg.version_reasons(Case(variant="flash-attn", seq_len=64, causal=True), (2, 0)) == []


# -------------------------------------------------------------------- xformers

fmha = xformers_mea._import_fmha() if importlib.util.find_spec("xformers") else None
needs_xformers = pytest.mark.skipif(fmha is None, reason="xformers is not installed")


@needs_xformers
def test_xformers_bias_objects_by_case():
    bias = fmha.attn_bias

    def built(**fields):
        return xformers_mea.mask_bias(fmha, Case(variant="xformers", **{"seq_len": 64, **fields}))

    assert built() is None
    assert type(built(causal=True)) is bias.LowerTriangularMask
    assert type(built(causal=True, kv_len=80)) is bias.LowerTriangularFromBottomRightMask
    local = built(causal=True, mask="sliding_window:16")
    assert type(local) is bias.LowerTriangularFromBottomRightLocalAttentionMask and local._window_size == 17
    both = built(mask="sliding_window:16", kv_len=80)
    assert type(both) is bias.LocalAttentionFromBottomRightMask
    assert (both.window_left, both.window_right) == (16, 16)


@needs_xformers
@pytest.mark.parametrize(("shape", "causal", "mask"), WINDOW_GRID)
def test_xformers_bias_objects_materialize_to_our_mask(shape, causal, mask):
    seq_len, kv_len = shape
    case = Case(variant="xformers", seq_len=seq_len, kv_len=kv_len, causal=causal, mask=mask)
    bias = xformers_mea.mask_bias(fmha, case)
    if bias is None:
        assert case_mask_matrix(case) is None
        return
    materialized = bias.materialize((2, 3, seq_len, kv_len))                          # (B, H, N, M), 0 or −∞
    assert set(materialized.unique().tolist()) <= {0.0, float("-inf")}
    assert torch.equal(materialized == 0, allowed_or_all(case).expand(2, 3, seq_len, kv_len))


@needs_xformers
@pytest.mark.parametrize("fields", [
    dict(score_mod="alibi"),
    dict(score_mod="alibi", causal=True, mask="sliding_window:4"),
    dict(score_mod="alibi", heads=8, kv_heads=2, causal=True),
    dict(mask="document:3", seq_len=13, kv_len=13),
    dict(mask="prefix_lm:4", causal=True),
    dict(mask="prefix_lm:4", heads=4, kv_heads=1),
], ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_xformers_dense_bias_is_our_bias_and_mask(fields):
    fields = {"batch": 2, "heads": 4, "seq_len": 5, "kv_len": 13, **fields}
    case = Case(variant="xformers", **fields)
    assert xformers_mea.needs_dense_bias(case)
    bias = xformers_mea.attention_bias(fmha, case, torch.float16, "cpu")
    assert bias.dtype == torch.float16 and bias.shape == xformers_mea.dense_bias_shape(case)
    assert bias.stride(0) == 0                                                        # one copy for the batch
    assert bias.stride(-1) == 1 and all(s % 8 == 0 for s in bias.stride()[:-1])     # xFormers' alignment
    values = score_bias(case, dtype=torch.float64)                                   # (H, N, M), or None
    values = torch.zeros(case.heads, case.seq_len, case.kv_len, dtype=torch.float64) if values is None else values
    expected = values.masked_fill(~allowed_or_all(case), float("-inf"))              # (H, N, M)
    got = bias.reshape(case.batch, case.heads, case.seq_len, case.kv_len).double()
    assert torch.allclose(got, expected.expand_as(got), rtol=2e-3, atol=1e-3, equal_nan=False)
    assert torch.equal(torch.isinf(got), torch.isinf(expected).expand_as(got))


@needs_xformers
def test_xformers_takes_no_soft_cap_and_routes_the_rest():
    case = Case(variant="xformers", seq_len=64, score_mod="softcap:30")
    reasons = REGISTRY.get("xformers").unsupported_reasons(case)
    assert any("cannot express softcap" in r for r in reasons), reasons
    assert not xformers_mea.needs_dense_bias(Case(variant="xformers", seq_len=64, causal=True,
                                                  mask="sliding_window:8"))
    for fields in (dict(kv_heads=2), dict(v_head_dim=32), dict(mask="document:2"), dict(score_mod="alibi")):
        reasons = REGISTRY.get("xformers").unsupported_reasons(Case(variant="xformers", seq_len=64, **fields))
        assert reasons and all("xFormers" in r for r in reasons), (fields, reasons)   # only xFormers' own answers


@needs_xformers
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_xformers_layout_is_views_of_the_inputs(kv_heads):
    case = Case(variant="xformers", batch=2, heads=4, kv_heads=kv_heads, seq_len=5, kv_len=7, head_dim=8,
                v_head_dim=6)
    q, k, v = make_inputs(case).tensors()
    query, key, value = xformers_mea.xformers_layout(q, k, v)
    groups = case.heads // kv_heads
    for laid_out, original in ((query, q), (key, k), (value, v)):
        assert laid_out.untyped_storage().data_ptr() == original.untyped_storage().data_ptr()   # no copy
        assert laid_out.stride(-1) == 1
    if kv_heads == case.heads:
        assert query.shape == (2, 5, 4, 8) and key.shape == (2, 7, 4, 8) and value.shape == (2, 7, 4, 6)
        return
    assert query.shape == (2, 5, kv_heads, groups, 8)                                # BMGHK
    assert key.shape == (2, 7, kv_heads, groups, 8) and value.shape == (2, 7, kv_heads, groups, 6)
    assert key.stride(3) == 0 and value.stride(3) == 0                               # expanded, not copied
    for head in range(case.heads):
        assert torch.equal(query[:, :, head // groups, head % groups], q[:, head])
        assert torch.equal(key[:, :, head // groups, head % groups], k[:, head // groups])


def emulated_memory_efficient_attention(query, key, value, bias) -> torch.Tensor:
    """memory_efficient_attention's function on BMHK or BMGHK inputs, in plain float64: softmax(q kᵀ/√K + bias) v."""
    grouped = query.ndim == 5
    q, k, v = (t if grouped else t.unsqueeze(2) for t in (query, key, value))       # (B, L, G, H, K)
    q, k, v = (t.double().permute(0, 2, 3, 1, 4) for t in (q, k, v))                # (B, G, H, L, K)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                       # (B, G, H, N, M)
    if bias is not None:
        shape = scores.shape if grouped else (scores.shape[0], scores.shape[2], *scores.shape[3:])
        dense = bias if isinstance(bias, torch.Tensor) else bias.materialize(shape)
        scores = scores + (dense if grouped else dense.unsqueeze(1)).double()
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    out = (weights @ v).permute(0, 3, 1, 2, 4)                                      # (B, N, G, H, K_v)
    return out if grouped else out.squeeze(2)


@needs_xformers
@pytest.mark.parametrize("fields", [
    dict(kv_heads=2, causal=True, kv_len=40),
    dict(kv_heads=1, seq_len=1, kv_len=64, causal=True),
    dict(kv_heads=2, mask="sliding_window:6"),
    dict(kv_heads=4, causal=True, mask="sliding_window:6", kv_len=40),
    dict(kv_heads=2, score_mod="alibi", causal=True, kv_len=40),
    dict(kv_heads=1, mask="document:3"),
    dict(kv_heads=2, mask="prefix_lm:5", v_head_dim=12),
], ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_the_layout_and_bias_compute_the_case_under_xformers_semantics(fields):
    """On CPU the kernel cannot run; its documented function on our layout and bias must be the reference."""
    case = Case(variant="xformers", **{"batch": 2, "heads": 4, "seq_len": 24, "head_dim": 16, **fields})
    inputs = upcast(make_inputs(case))
    q, k, v = inputs.tensors()
    query, key, value = xformers_mea.xformers_layout(q, k, v)
    bias = xformers_mea.attention_bias(fmha, case, torch.float64, "cpu")
    out = emulated_memory_efficient_attention(query, key, value, bias)
    out = out.reshape(case.batch, case.seq_len, case.heads, -1).transpose(1, 2)    # as the variant hands it back
    reference = REGISTRY.get("xformers").reference(case, inputs)
    assert out.shape == reference.shape and torch.allclose(out, reference, atol=1e-12)


@needs_xformers
def test_xformers_memory_model_counts_the_dense_bias():
    variant = REGISTRY.get("xformers")
    plain = Case(variant="xformers", seq_len=100, kv_len=100, heads=4, causal=True)
    alibi = Case(variant="xformers", seq_len=100, kv_len=100, heads=4, causal=True, score_mod="alibi")
    document = Case(variant="xformers", seq_len=100, kv_len=100, heads=4, mask="document:2")
    assert variant.memory_model(alibi) - variant.memory_model(plain) == 4 * 100 * 104 * 4
    assert variant.memory_model(document) - variant.memory_model(plain) == 100 * 104 * 4


# ------------------------------------------------------------------ on a GPU

GPU_CASES = [
    dict(heads=8, kv_heads=2, seq_len=128),
    dict(heads=8, kv_heads=1, seq_len=128, causal=True),
    dict(heads=8, kv_heads=2, seq_len=1, kv_len=256, causal=True),
    dict(heads=8, kv_heads=2, seq_len=4, kv_len=256, causal=True),
    dict(heads=4, seq_len=128, causal=True, mask="sliding_window:32"),
    dict(heads=4, seq_len=64, kv_len=160, mask="sliding_window:16"),
    dict(heads=4, seq_len=128, causal=True, score_mod="alibi"),
    dict(heads=8, kv_heads=2, seq_len=128, causal=True, mode="fwd_bwd"),
]


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["flash-attn", "xformers"])
@pytest.mark.parametrize("fields", GPU_CASES + [dict(heads=4, seq_len=128, score_mod="softcap:20")],
                         ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_kernels_run_the_new_axes_on_cuda(name, fields):
    case = Case(variant=name, device="cuda", dtype="float16", head_dim=64, **fields)
    result = measure_accurate(case, REGISTRY.get(name), FAST)
    assert result.flops == (round(attention_flops(case) * 3.5) if case.mode == "fwd_bwd" else attention_flops(case))


@pytest.mark.cuda
def test_flash_attn_decode_sees_every_key_on_cuda():
    """One query against 64 causal keys sees them all (bottom-right alignment), as softmax without a mask."""
    variant = REGISTRY.get("flash-attn")
    case = Case(variant="flash-attn", device="cuda", dtype="float16", seq_len=1, kv_len=64, heads=4, kv_heads=2,
                head_dim=64, causal=True)
    skip_unless_supported(variant, case)
    inputs = make_inputs(case)
    out = variant.prepare(case, inputs)()
    q, k, v = (t.double() for t in inputs.tensors())
    assert torch.allclose(out.double(), softmax_attention(q, k, v, causal=False), atol=2e-3)

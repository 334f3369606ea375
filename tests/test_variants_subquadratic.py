"""Sub-quadratic variants (Longformer, Performer/linear, Mamba scans) against their float64 references.

The grid comes from each variant's own metadata (dtypes, causal, backward),
with readable ids such as ``performer-cpu-float32-causal-fwd``. Knobs are set
small so the whole file stays fast; compiled variants (longformer-flex,
mamba-scan) share one shape so each compiles only a few times.
"""

from __future__ import annotations

import math

import pytest
import torch

import attnbench.variants.mamba as mamba
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.measure.accuracy import error_metrics, tolerance
from attnbench.measure.inputs import make_inputs, make_output_grad, upcast
from attnbench.measure.memory import cpu_peak_bytes
from attnbench.variants.longformer import (
    Longformer,
    LongformerFlex,
    banded_attention,
    sparse_attention_reference,
)
from attnbench.variants.mamba import (
    Mamba2SSD,
    MambaScan,
    segsum,
    selective_inputs,
    selective_scan_chunked,
    selective_scan_sequential,
    ssd_chunked,
    ssd_inputs,
    ssd_sequential,
)
from attnbench.variants.performer import (
    LinearAttention,
    Performer,
    causal_linear_attention,
    linear_attention,
    quadratic_linear_attention,
)

VARIANTS = {cls.name: cls() for cls in (Longformer, LongformerFlex, Performer, LinearAttention, MambaScan, Mamba2SSD)}
SMALL_KNOBS = {
    "longformer": {"window": 24, "global_tokens": 3},
    "longformer-flex": {"window": 24, "global_tokens": 3},
    "performer": {"features": 64},
    "linear": {},
    "mamba-scan": {"state_dim": 8, "chunk": 8},
    "mamba2-ssd": {"chunk": 16},
}
SHAPE = {"batch": 2, "heads": 2, "seq_len": 100, "head_dim": 16, "qk_std": 0.5}
GRID_DTYPES = ("float32", "bfloat16")
# Compiling FlexAttention takes tens of seconds per dtype and mask on a shared CPU: its grid is float32 only.
GRID_DTYPES_OF = {"longformer-flex": ("float32",)}


def _case(name: str, **overrides) -> Case:
    fields = {**SHAPE, "params": {**VARIANTS[name].params, **SMALL_KNOBS[name]}, **overrides}
    return Case(variant=name, **fields)


def _grid():
    for name, variant in VARIANTS.items():
        for dtype in GRID_DTYPES_OF.get(name, GRID_DTYPES):
            if dtype not in variant.dtypes:
                continue
            for causal in ((False, True) if variant.supports_causal else (False,)):
                for mode in (("fwd", "fwd_bwd") if variant.supports_backward else ("fwd",)):
                    if not variant.supports(_case(name, dtype=dtype, causal=causal, mode=mode)):
                        continue  # e.g. compiled FlexAttention has no CPU backward; `attnbench list` says why
                    case_id = f"{name}-cpu-{dtype}-{'causal' if causal else 'full'}-{mode}"
                    yield pytest.param(name, dtype, causal, mode, id=case_id)


def assert_matches(output: torch.Tensor, reference: torch.Tensor, dtype: str, what: str) -> None:
    """Relative L2 error within the dtype's tolerance, or a failure naming the worst element and where."""
    tol = tolerance(dtype)
    metrics = error_metrics(output, reference)
    if metrics.nonfinite == 0 and metrics.rel_l2_error <= tol:
        return
    got = output.detach().to("cpu", torch.float64)
    want = reference.detach().to("cpu", torch.float64)
    diff = (got - want).abs().nan_to_num(nan=math.inf)
    flat = int(diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    scale = float(want.abs().max()) or 1.0
    share = float((diff > tol * scale).double().mean()) * 100
    pytest.fail(f"{what}: rel L2 error {metrics.rel_l2_error:.3g} > {tol:g} ({metrics.nonfinite} non-finite); "
                f"worst |out − ref| = {float(diff.flatten()[flat]):.3g} at {where}: "
                f"got {float(got.flatten()[flat]):.6g}, want {float(want.flatten()[flat]):.6g}; "
                f"{share:.1f}% of elements off by more than tol·max|ref|")


@pytest.mark.parametrize(("name", "dtype", "causal", "mode"), list(_grid()))
def test_matches_float64_reference(name, dtype, causal, mode):
    variant = VARIANTS[name]
    case = _case(name, dtype=dtype, causal=causal, mode=mode)
    backward = mode == "fwd_bwd"
    inputs = make_inputs(case, requires_grad=backward)
    output = variant.prepare(case, inputs)()
    exact_inputs = upcast(inputs, requires_grad=backward)
    reference = variant.reference(case, exact_inputs)
    assert output.shape == reference.shape
    assert output.dtype == inputs.q.dtype
    assert_matches(output, reference, dtype, f"{case.label} output")
    if backward:
        grad = make_output_grad(case, output)
        output.backward(grad)
        reference.backward(grad.to(torch.float64))
        for tensor_name, got, want in zip("qkv", inputs.tensors(), exact_inputs.tensors(), strict=True):
            assert got.grad is not None, f"{case.label}: no gradient reached {tensor_name}"
            assert_matches(got.grad, want.grad, dtype, f"{case.label} d{tensor_name}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name", ["longformer", "longformer-flex"])
def test_window_covering_the_sequence_is_exact_attention(name, causal):
    variant = VARIANTS[name]
    case = _case(name, causal=causal, params={"window": SHAPE["seq_len"] + 5, "global_tokens": 0})
    inputs = make_inputs(case)
    output = variant.prepare(case, inputs)()
    exact = softmax_attention(*upcast(inputs).tensors(), causal=causal)
    assert_matches(output, exact, "float32", f"{case.label} against exact softmax attention")


def test_longformer_reference_rows_and_weights_agree():
    variant = VARIANTS["longformer"]
    case = _case("longformer", causal=True)
    inputs = upcast(make_inputs(case))
    full = variant.reference(case, inputs)
    rows = torch.tensor([99, 0, 2, 50])
    torch.testing.assert_close(variant.reference(case, inputs, rows=rows), full[:, :, rows])
    weights = variant.attention_weights(case, inputs)
    assert weights.shape == (2, 2, 100, 100) and weights.dtype == torch.float64
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 100, dtype=torch.float64))
    # the pattern: row 50 sees 26..50 and the 3 global keys, nothing else
    visible = (weights[0, 0, 50] > 0).nonzero().flatten().tolist()
    assert visible == [0, 1, 2, *range(26, 51)]


def test_longformer_band_odd_lengths_in_float64():
    """Lengths that are not a multiple of the window, globals in and out of the band, both masks."""
    generator = torch.Generator().manual_seed(3)
    for seq_len, window, global_tokens in ((1, 4, 0), (7, 3, 2), (33, 8, 0), (33, 8, 5), (40, 39, 1), (150, 70, 0), (201, 64, 3)):
        q, k, v = (torch.randn(1, 2, seq_len, 8, generator=generator, dtype=torch.float64) for _ in range(3))
        for causal in (False, True):
            got = banded_attention(q, k, v, window, global_tokens, causal)
            want = sparse_attention_reference(q, k, v, window, global_tokens, causal)
            torch.testing.assert_close(got, want, msg=lambda m, s=(seq_len, window, global_tokens, causal): f"{s}: {m}")


def test_performer_error_falls_as_features_grow():
    """Approximation error against exact softmax, averaged over seeds, shrinks with m (about like 1/√m)."""
    variant = VARIANTS["performer"]
    mean_error = {}
    for features in (16, 64, 256):
        errors = []
        for seed in range(4):
            case = Case(variant="performer", batch=1, heads=2, seq_len=128, head_dim=16, qk_std=0.5,
                        seed=seed, params={"features": features})
            inputs = make_inputs(case)
            output = variant.prepare(case, inputs)()
            exact = softmax_attention(*upcast(inputs).tensors(), causal=False)
            errors.append(error_metrics(output, exact).rel_l2_error)
        mean_error[features] = sum(errors) / len(errors)
    assert mean_error[16] > mean_error[64] > mean_error[256], mean_error
    assert mean_error[256] < 0.5 * mean_error[16], mean_error


@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_causal_prefix_sums_equal_the_quadratic_masked_form(chunk):
    generator = torch.Generator().manual_seed(1)
    qf = torch.rand(2, 3, 50, 12, generator=generator, dtype=torch.float64) + 0.01
    kf = torch.rand(2, 3, 50, 12, generator=generator, dtype=torch.float64) + 0.01
    v = torch.randn(2, 3, 50, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(causal_linear_attention(qf, kf, v, chunk=chunk),
                               quadratic_linear_attention(qf, kf, v, causal=True))
    torch.testing.assert_close(linear_attention(qf, kf, v), quadratic_linear_attention(qf, kf, v, causal=False))


@pytest.mark.parametrize("chunk", [1, 5, 16, 200])
def test_mamba_chunked_scan_equals_the_sequential_recurrence(chunk, monkeypatch):
    monkeypatch.setattr(mamba, "GROUP_CHUNKS", 4)                         # several groups, carried across
    case = _case("mamba-scan")
    q, k, v = upcast(make_inputs(case)).tensors()
    delta, x, b, c, a = selective_inputs(case, q, k, v, 8, torch.float64)
    want = selective_scan_sequential(delta, x, b, c, a)
    torch.testing.assert_close(selective_scan_chunked(delta, x, b, c, a, chunk, compiled=False), want)


@pytest.mark.parametrize("chunk", [1, 7, 16, 200])
def test_ssd_chunked_equals_the_sequential_recurrence(chunk):
    case = _case("mamba2-ssd")
    x, delta, a, b, c = ssd_inputs(case, *upcast(make_inputs(case)).tensors(), torch.float64)
    torch.testing.assert_close(ssd_chunked(x, delta, a, b, c, chunk), ssd_sequential(x, delta, a, b, c))


def test_segsum_is_the_sum_over_each_segment():
    a = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    out = segsum(a)
    for i in range(4):
        for j in range(4):
            want = float(a[j + 1:i + 1].sum()) if j <= i else -math.inf
            assert float(out[i, j]) == pytest.approx(want)


UNSUPPORTED = [
    ("longformer", {"kv_len": 64}, "kv_len"),
    ("longformer", {"params": {"window": 0, "global_tokens": 0}}, "window"),
    ("longformer-flex", {"mode": "fwd_bwd"}, "backward"),
    ("longformer-flex", {"dtype": "float64"}, "dtype"),
    ("longformer-flex", {"device": "cuda"}, "CUDA"),
    ("performer", {"causal": True, "kv_len": 64}, "kv_len"),
    ("performer", {"params": {"features": -3}}, "features"),
    ("linear", {"params": {"features": 8}}, "knob"),
    ("mamba-scan", {"kv_len": 64}, "kv_len"),
    ("mamba-scan", {"params": {"state_dim": 0, "chunk": 8}}, "state_dim"),
    ("mamba2-ssd", {"params": {"chunk": "big"}}, "chunk"),
]


@pytest.mark.parametrize(("name", "overrides", "word"), UNSUPPORTED,
                         ids=[f"{n}-{'-'.join(o)}" for n, o, _ in UNSUPPORTED])
def test_unsupported_combinations_give_reasons(name, overrides, word):
    if word == "CUDA" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    case = _case(name, **overrides)
    reasons = VARIANTS[name].unsupported_reasons(case)
    assert reasons and all(isinstance(r, str) and r for r in reasons)
    assert any(word.lower() in r.lower() for r in reasons), reasons
    assert not VARIANTS[name].supports(case)


def test_state_space_variants_accept_both_causal_flags_and_give_one_function():
    for name in ("mamba-scan", "mamba2-ssd"):
        variant = VARIANTS[name]
        outputs = []
        for causal in (False, True):
            case = _case(name, causal=causal)
            assert variant.supports(case)
            outputs.append(variant.prepare(case, make_inputs(case))())
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
        assert variant.attention_weights(case, make_inputs(case)) is None


def test_kernel_attention_weights_are_normalised_implicit_weights():
    for name in ("performer", "linear"):
        variant = VARIANTS[name]
        case = _case(name, causal=True)
        inputs = make_inputs(case)
        weights = variant.attention_weights(case, inputs)
        assert weights.shape == (2, 2, 100, 100) and weights.dtype == torch.float64
        assert bool((weights >= 0).all()) and float(weights.triu(1).abs().max()) == 0.0
        reference = variant.reference(case, upcast(inputs))
        torch.testing.assert_close(weights @ upcast(inputs).v, reference)


# Measured peak above the inputs stays under MEMORY_FACTOR × memory_model (+ allocator slack).
MEMORY_FACTOR = 1.5
MEMORY_SLACK = 4 << 20
MEMORY_CASES = [
    ("longformer", {"window": 64, "global_tokens": 2}, False),
    ("longformer", {"window": 64, "global_tokens": 0}, True),
    ("performer", {"features": 64}, False),
    ("performer", {"features": 64}, True),
    ("linear", {}, False),
    ("linear", {}, True),
    ("mamba-scan", {"state_dim": 8, "chunk": 8}, False),
    ("mamba2-ssd", {"chunk": 64}, False),
]


@pytest.mark.parametrize(("name", "knobs", "causal"), MEMORY_CASES,
                         ids=[f"{n}-{'causal' if c else 'full'}" for n, _, c in MEMORY_CASES])
def test_measured_peak_memory_within_the_model(name, knobs, causal):
    variant = VARIANTS[name]
    case = Case(variant=name, batch=1, heads=4, seq_len=2048, head_dim=32, causal=causal, params=knobs)
    model = variant.memory_model(case)
    with torch.inference_mode():
        inputs = make_inputs(case)
        forward = variant.prepare(case, inputs)
        forward()
        peak = cpu_peak_bytes(forward)
    assert model > 0
    assert peak.peak_bytes <= MEMORY_FACTOR * model + MEMORY_SLACK, (
        f"{case.label}: measured {peak.peak_bytes / 2**20:.1f} MiB ({peak.method}) "
        f"but the model says {model / 2**20:.1f} MiB")

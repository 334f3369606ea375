"""The dense attention zoo: additive, Luong, flash-tiled, flex, flash-attn and xformers.

The grid of each variant is built from its own metadata (dtypes, devices,
causal and backward support), with readable ids such as
`additive-cpu-float32-causal-fwd_bwd`. Every supported CPU cell is compared with
the variant's float64 reference on the same inputs upcast, output and
gradients; every unsupported cell must give reasons without raising.

Tolerances (relative L2 error): the output must stay within
`attnbench.accuracy.tolerance(dtype)` (float32 2e-5, float16 5e-3, bfloat16 3e-2,
float64 1e-10); gradients within twice that, since they pass through a second
chain of rounded operations. Exact-function checks (chunked against direct,
a hand-computed local-p example) use float64 and 1e-12.

Flex compiles one kernel per shape and dtype (10-20 s each on a cold compile
cache on a busy 2-core machine, under a second once cached); its float16 and
bfloat16 cells are in the end-to-end tier (`pytest -m e2e`).
Every test runs torch on one thread: the tensors are tiny, and on a shared
machine OpenMP's barriers between two threads cost more than the work.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.attention.masks import causal_mask, query_positions
from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.variant import AttentionInputs, seeded_weight
from attnbench.measure.accuracy import error_metrics, tolerance
from attnbench.measure.inputs import make_inputs, make_output_grad, upcast
from attnbench.measure.memory import cpu_peak_bytes, hwm_reset_works
from attnbench.variants.additive import AdditiveAttention
from attnbench.variants.luong import (
    LuongGeneral,
    LuongLocal,
    predicted_positions,
    visible_key_counts,
)

NAMES = ("additive", "luong-dot", "luong-general", "luong-concat", "luong-local",
         "flash-tiled", "flex", "flash-attn", "xformers")
REGISTRY = default_registry()
# Small cases: kv_len differs from seq_len so cross attention is exercised, and under a
# causal mask kv_len < seq_len, so the first queries see no key at all (their output is 0).
SHAPE = {False: dict(seq_len=40, kv_len=56), True: dict(seq_len=56, kv_len=40)}
SMALL = dict(batch=2, heads=2, head_dim=16)
# Knobs small enough that chunks, windows and blocks really split these shapes.
SMALL_KNOBS = {"additive": {"chunk": 7, "attn_dim": 24}, "luong-concat": {"chunk": 9, "attn_dim": 24},
               "luong-local": {"window": 6, "chunk": 11}, "flash-tiled": {"block": 16, "query_block": 12}}
# Compiled flex on CPU is declared unsupported for head_dim <= 16 (it gave wrong values there).
SMALL_SHAPE = {"flex": {"head_dim": 32}}
EXACT = 1e-12


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def variant(name):
    return REGISTRY.get(name)


def small_case(name, dtype="float32", causal=False, mode="fwd", device="cpu", **overrides):
    params = {**variant(name).params, **SMALL_KNOBS.get(name, {}), **overrides.pop("params", {})}
    fields = {**SMALL, **SHAPE[causal], **SMALL_SHAPE.get(name, {}), **overrides}
    return Case(variant=name, dtype=dtype, causal=causal, mode=mode, device=device, params=params, **fields)


def case_id(case: Case) -> str:
    return "-".join([case.variant, case.device, case.dtype, "causal" if case.causal else "full", case.mode])


def grid(supported: bool):
    """Every (device, dtype, causal, mode) a variant's metadata names, split by whether it can run here."""
    for name in NAMES:
        v = variant(name)
        for device in ("cpu", "cuda"):
            for dtype in ("float32", "float16", "bfloat16", "float64"):
                for causal in (False, True):
                    for mode in ("fwd", "fwd_bwd"):
                        case = small_case(name, dtype, causal, mode, device)
                        if v.supports(case) != supported:
                            continue
                        slow = supported and name == "flex" and dtype != "float32"
                        yield pytest.param(case, id=case_id(case), marks=[pytest.mark.e2e] if slow else [])


def worst_element(got: torch.Tensor, want: torch.Tensor, bound: float) -> str:
    """Where the largest error is, the two values there, and how many elements exceed a per-element bound."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    diff = (got - want).abs()
    flat = int(diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    per_element = bound * (want.abs() + want.abs().mean())
    share = float((diff > per_element).double().mean())
    return (f"worst |Δ| {float(diff.view(-1)[flat]):.3e} at {where}: got {float(got.view(-1)[flat]):.6g}, "
            f"want {float(want.view(-1)[flat]):.6g}; {share:.1%} of elements beyond {bound:.0e} relative")


def assert_close(got: torch.Tensor, want: torch.Tensor, bound: float, what: str) -> None:
    metrics = error_metrics(got, want)
    assert metrics.nonfinite == 0, f"{what}: {metrics.nonfinite} non-finite values"
    assert metrics.rel_l2_error <= bound, (
        f"{what}: relative L2 error {metrics.rel_l2_error:.3e} > {bound:.0e}; {worst_element(got, want, bound)}")


def run_forward(case: Case, inputs: AttentionInputs) -> torch.Tensor:
    forward = variant(case.variant).prepare(case, inputs)
    if case.mode == "fwd":
        with torch.inference_mode():
            return forward()
    return forward()


# ---------------------------------------------------------------- the grid

@pytest.mark.parametrize("case", list(grid(supported=True)))
def test_output_and_gradients_match_the_float64_reference(case):
    v = variant(case.variant)
    inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
    out = run_forward(case, inputs)
    assert out.shape == (case.batch, case.heads, case.seq_len, case.head_dim) and out.dtype == inputs.q.dtype
    inputs64 = upcast(inputs, requires_grad=case.mode == "fwd_bwd")
    reference = v.reference(case, inputs64)
    assert reference.dtype == torch.float64
    assert_close(out, reference, tolerance(case.dtype), f"{case_id(case)} output")
    if case.mode == "fwd_bwd":
        grad_output = make_output_grad(case, out)
        grads = torch.autograd.grad(out, inputs.tensors(), grad_output)
        ref_grads = torch.autograd.grad(reference, inputs64.tensors(), grad_output.double())
        for label, got, want in zip("qkv", grads, ref_grads, strict=True):
            assert_close(got, want, 2 * tolerance(case.dtype), f"{case_id(case)} d{label}")


@pytest.mark.parametrize("case", list(grid(supported=False)))
def test_unsupported_cells_give_reasons_without_raising(case):
    reasons = variant(case.variant).unsupported_reasons(case)
    assert reasons and all(isinstance(r, str) and len(r) > 10 for r in reasons), reasons


def test_the_grid_covers_what_the_issue_names():
    supported = {case_id(p.values[0]) for p in grid(supported=True)}
    unsupported = {case_id(p.values[0]) for p in grid(supported=False)}
    assert "additive-cpu-float32-causal-fwd_bwd" in supported
    assert "flex-cpu-float32-causal-fwd" in supported
    assert "flex-cpu-float32-full-fwd_bwd" in unsupported
    assert not any(i.startswith(("flash-attn-", "xformers-cpu")) for i in supported)
    if not torch.cuda.is_available():
        assert not any("-cuda-" in i for i in supported)


# ------------------------------------------------------- specific reasons

def test_unsupported_reasons_name_the_actual_obstacle():
    flex = variant("flex").unsupported_reasons(small_case("flex", mode="fwd_bwd", head_dim=16))
    assert any("no backward on CPU" in r for r in flex)
    assert any("head_dim <= 16" in r for r in flex)
    flash = variant("flash-attn").unsupported_reasons(small_case("flash-attn", head_dim=512))
    assert any("not installed" in r for r in flash)
    assert any("CUDA-only" in r for r in flash)
    assert any("float16 or bfloat16" in r for r in flash)
    assert any("head_dim up to 256" in r for r in flash)
    for name, knobs in [("additive", {"chunk": -1}), ("luong-concat", {"attn_dim": 0}),
                        ("luong-local", {"window": 0}), ("luong-local", {"score": "cosine"}),
                        ("flash-tiled", {"block": 0}), ("flash-tiled", {"query_block": -2})]:
        reasons = variant(name).unsupported_reasons(small_case(name, params=knobs))
        assert any(next(iter(knobs)) in r for r in reasons), (name, reasons)


def test_xformers_reasons_are_xformers_own_text():
    xformers = variant("xformers")
    for case in (xformers.probe_case("cpu"), small_case("xformers", causal=True, mode="fwd_bwd")):
        reasons = xformers.unsupported_reasons(case)
        operators = [r for r in reasons if "is not supported because:" in r]
        assert operators, reasons
        assert any("`cutlassF-pt` is not supported because: device=cpu" in r for r in operators), reasons
        if case.mode == "fwd_bwd":
            assert any(r.startswith("xFormers backward:") for r in operators)


# ------------------------------------------- functions equal to softmax attention

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("blocks", [(1, 1), (7, 5), (5, 13), (16, 1000), (1000, 1000)],
                         ids=lambda b: f"keys{b[0]}xqueries{b[1]}")
@pytest.mark.parametrize("shape", [(48, 48), (33, 70), (70, 33)], ids=["square", "longer-keys", "shorter-keys"])
def test_flash_tiled_is_softmax_attention(shape, blocks, causal):
    seq_len, kv_len = shape
    knobs = {"block": blocks[0], "query_block": blocks[1]}
    case = small_case("flash-tiled", "float64", causal, seq_len=seq_len, kv_len=kv_len, params=knobs)
    inputs = make_inputs(case)
    assert_close(run_forward(case, inputs), softmax_attention(*inputs.tensors(), causal=causal), EXACT,
                 f"flash-tiled {knobs}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_tiled_gradients_are_softmax_attention_gradients(causal):
    case = small_case("flash-tiled", "float64", causal, "fwd_bwd", params={"block": 9, "query_block": 6})
    inputs = make_inputs(case, requires_grad=True)
    out = run_forward(case, inputs)
    grad_output = make_output_grad(case, out)
    got = torch.autograd.grad(out, inputs.tensors(), grad_output)
    q, k, v = (t.detach().requires_grad_() for t in inputs.tensors())
    want = torch.autograd.grad(softmax_attention(q, k, v, causal=causal), (q, k, v), grad_output)
    for label, g, w in zip("qkv", got, want, strict=True):
        assert_close(g, w, EXACT, f"d{label}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_luong_dot_on_scaled_queries_is_softmax_attention(causal):
    case = small_case("luong-dot", "float64", causal)
    q, k, v = make_inputs(case).tensors()
    scaled = AttentionInputs(q / math.sqrt(case.head_dim), k, v)
    assert_close(run_forward(case, scaled), softmax_attention(q, k, v, causal=causal), EXACT, "luong-dot")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flex_is_softmax_attention(causal):
    case = small_case("flex", "float32", causal)
    inputs = make_inputs(case)
    expected = softmax_attention(*upcast(inputs).tensors(), causal=causal)
    assert_close(run_forward(case, inputs), expected, tolerance("float32"), "flex")


def test_luong_general_is_dot_attention_on_projected_keys():
    case = small_case("luong-general", "float64", True)
    q, k, v = make_inputs(case).tensors()
    weight = seeded_weight(case, 201, (case.head_dim, case.head_dim), 1 / math.sqrt(case.head_dim)).double()
    expected = softmax_attention(q, k @ weight.T, v, causal=True, scale=1.0)
    assert_close(run_forward(case, AttentionInputs(q, k, v)), expected, EXACT, "luong-general")


# ------------------------------------------------------------- local-p, exactly

def test_local_p_hand_computed_gaussian_weights():
    """q = 0: every score is 0 and p = S·sigmoid(0) = S/2, so the weights are known in closed form."""
    seq_len, kv_len, half_width = 3, 5, 4                      # σ = 2; the window covers all 5 keys
    case = Case("luong-local", seq_len=seq_len, kv_len=kv_len, batch=1, heads=1, head_dim=4, dtype="float64",
                params={"window": half_width, "score": "general", "predictor_dim": 8, "chunk": 0})
    _, k, v = make_inputs(case).tensors()
    inputs = AttentionInputs(torch.zeros(1, 1, seq_len, 4, dtype=torch.float64), k, v)
    s = torch.arange(kv_len, dtype=torch.float64)
    by_hand = torch.exp(-(s - 2.5) ** 2 / (2 * 2.0 ** 2)) / kv_len          # softmax 1/5 times the Gaussian
    weights = variant("luong-local").attention_weights(case, inputs)
    assert torch.allclose(weights, by_hand.expand(1, 1, seq_len, kv_len), atol=EXACT, rtol=0)
    expected = (by_hand @ v[0, 0]).expand(1, 1, seq_len, 4)
    assert_close(run_forward(case, inputs), expected, EXACT, "local-p output")


def test_local_p_causal_hand_computed():
    """Causal, q = 0: query i sees S_i = i + 1 keys, p = (i + 1)/2, uniform softmax over them."""
    n, half_width = 5, 8
    case = Case("luong-local", seq_len=n, batch=1, heads=1, head_dim=4, dtype="float64", causal=True,
                params={"window": half_width, "score": "dot", "predictor_dim": 8, "chunk": 2})
    _, k, v = make_inputs(case).tensors()
    inputs = AttentionInputs(torch.zeros(1, 1, n, 4, dtype=torch.float64), k, v)
    sigma = half_width / 2
    by_hand = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        p = (i + 1) / 2
        for s in range(i + 1):
            by_hand[i, s] = math.exp(-(s - p) ** 2 / (2 * sigma ** 2)) / (i + 1)
    assert torch.allclose(variant("luong-local").attention_weights(case, inputs)[0, 0], by_hand, atol=EXACT)
    assert_close(run_forward(case, inputs), (by_hand @ v[0, 0])[None, None], EXACT, "causal local-p output")


def test_local_p_with_a_window_over_every_key_is_general_attention_times_the_gaussian():
    case = small_case("luong-local", "float64", False, params={"window": 200, "chunk": 5})
    inputs = make_inputs(case)
    local = LuongLocal()
    w_p, v_p, _ = local._weights(case, dtype=torch.float64)
    p = predicted_positions(inputs.q, w_p, v_p, visible_key_counts(case.seq_len, case.kv_len, False))
    s = torch.arange(case.kv_len, dtype=torch.float64)
    sigma = 100.0
    gaussian = torch.exp(-(s - p[..., None]) ** 2 / (2 * sigma ** 2))                     # (B, H, N, M)
    general = LuongGeneral().attention_weights(Case("luong-general", **{
        k: getattr(case, k) for k in ("seq_len", "kv_len", "batch", "heads", "head_dim", "dtype", "seed")}), inputs)
    expected = (general * gaussian) @ inputs.v
    assert_close(run_forward(case, inputs), expected, EXACT, "wide-window local-p")


def test_local_p_attends_only_inside_its_window():
    case = small_case("luong-local", "float64", False, params={"window": 3})
    weights = variant("luong-local").attention_weights(case, make_inputs(case))
    support = (weights > 0).sum(dim=-1)
    assert int(support.max()) <= 7 and int(support.min()) >= 1
    span = weights.shape[-1] - (weights > 0).flip(-1).double().argmax(-1) - (weights > 0).double().argmax(-1)
    assert int(span.max()) <= 7


# ----------------------------------------------------- additive: chunked = direct

def direct_additive(case: Case, q, k, v, attn_dim: int) -> torch.Tensor:
    """The formula with the whole (B, H, N, M, attn_dim) tensor, no chunks."""
    d = case.head_dim
    w1 = seeded_weight(case, AdditiveAttention.W1_TAG, (attn_dim, d), 1 / math.sqrt(d)).double()
    w2 = seeded_weight(case, AdditiveAttention.W2_TAG, (attn_dim, d), 1 / math.sqrt(d)).double()
    score_vector = seeded_weight(case, AdditiveAttention.V_TAG, (attn_dim,), 1 / math.sqrt(attn_dim)).double()
    scores = torch.tanh((q @ w1.T)[:, :, :, None, :] + (k @ w2.T)[:, :, None, :, :]) @ score_vector
    if case.causal:
        scores = scores.masked_fill(~causal_mask(case.seq_len, case.kv_len), float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0) @ v


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("chunk", [0, 1, 5, 1000])
def test_additive_chunked_equals_direct(chunk, causal):
    shape = dict(seq_len=14, kv_len=10) if causal else dict(seq_len=10, kv_len=14)
    case = small_case("additive", "float64", causal, "fwd_bwd", params={"chunk": chunk, "attn_dim": 24}, **shape)
    inputs = make_inputs(case, requires_grad=True)
    out = run_forward(case, inputs)
    q, k, v = (t.detach().requires_grad_() for t in inputs.tensors())
    expected = direct_additive(case, q, k, v, 24)
    assert_close(out, expected, EXACT, f"chunk={chunk}")
    grad_output = make_output_grad(case, out)
    got = torch.autograd.grad(out, inputs.tensors(), grad_output)
    want = torch.autograd.grad(expected, (q, k, v), grad_output)
    for label, g, w in zip("qkv", got, want, strict=True):
        assert_close(g, w, EXACT, f"chunk={chunk} d{label}")


# ------------------------------------------------------------ attention weights

@pytest.mark.parametrize("name", ["additive", "luong-dot", "luong-general", "luong-concat", "luong-local",
                                  "flash-tiled"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_weights_reproduce_the_output(name, causal):
    case = small_case(name, "float64", causal)
    inputs = make_inputs(case)
    weights = variant(name).attention_weights(case, inputs)
    assert weights.shape == (case.batch, case.heads, case.seq_len, case.kv_len) and weights.dtype == torch.float64
    assert_close(run_forward(case, inputs), weights @ inputs.v, EXACT, f"{name} weights @ v")
    if causal:
        hidden = ~causal_mask(case.seq_len, case.kv_len)
        assert float(weights[..., hidden].abs().max()) == 0.0
    if name != "luong-local":                                  # local-p's Gaussian leaves rows below 1
        sums = weights.sum(dim=-1)
        sees_a_key = query_positions(case.seq_len, case.kv_len) >= 0 if causal else slice(None)
        assert torch.allclose(sums[..., sees_a_key], torch.ones((), dtype=torch.float64), atol=1e-12)
        if causal:                                             # kv_len < seq_len: the first rows see nothing
            assert float(sums[..., ~sees_a_key].abs().sum()) == 0.0


# --------------------------------------------------------------------- FLOPs

def test_flops_count_what_is_computed():
    tiny = dict(batch=1, heads=1, seq_len=2, kv_len=3, head_dim=4)
    additive = Case("additive", params={"attn_dim": 5, "chunk": 0}, **tiny)
    # projections 2·(2+3)·4·5, then 6 pairs × (add 5 + tanh 5 + vᵀ· 10 + P·V 8)
    assert variant("additive").flops(additive) == 200 + 6 * 28
    causal = Case("additive", params={"attn_dim": 5, "chunk": 0}, causal=True, **tiny)
    assert variant("additive").flops(causal) == 200 + 5 * 28               # query 0 sees 2 keys, query 1 sees 3
    local = Case("luong-local", params={"window": 1, "score": "dot", "predictor_dim": 2, "chunk": 0}, **tiny)
    # predictor per query: 2·4·2 + 2 + 2·2; window of 3 positions × (2·4 + 2·4)
    assert variant("luong-local").flops(local) == 2 * (16 + 2 + 4) + 2 * 3 * 16
    flat = small_case("flash-tiled")
    assert variant("flash-tiled").flops(flat) == 4 * 2 * 2 * 40 * 56 * 16


# -------------------------------------------------------------------- memory

@pytest.mark.skipif(not hwm_reset_works(), reason="needs Linux's resettable VmHWM for an exact CPU peak")
@pytest.mark.parametrize("name", ["additive", "luong-concat"])
def test_measured_peak_memory_matches_the_model(name):
    """Within 0.6x–1.4x of memory_model: the model counts every large tensor alive at the peak."""
    case = Case(name, seq_len=256, kv_len=512, batch=1, heads=4, head_dim=32,
                params={"attn_dim": 64, "chunk": 48})
    inputs = make_inputs(case)
    forward = variant(name).prepare(case, inputs)
    with torch.inference_mode():
        forward()                                                            # warm-up
        measured = cpu_peak_bytes(forward).peak_bytes
    predicted = variant(name).memory_model(case)
    full_tensor = case.batch * case.heads * case.seq_len * case.kv_len * 64 * 4
    assert predicted < full_tensor / 4, "the model should be far below the unchunked (N, M, attn_dim) tensor"
    assert 0.6 * predicted <= measured <= 1.4 * predicted, f"measured {measured:,} B, model {predicted:,} B"

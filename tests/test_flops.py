"""FLOP counts: one convention for every variant, checked against formulas and torch's FlopCounterMode.

The convention (TritonBench's): `flops()` is the useful forward FLOPs of the
*function* a case computes, so every variant of softmax attention returns the
same 4·B·H·(visible pairs)·d, causal or not; `performed_flops()` is what an
implementation really executes where that differs (naive's and sdpa-math's
full N×M products under a causal mask, flash-tiled's whole diagonal blocks,
longformer's padded slots); a backward counts 2.5 forwards.

`torch.utils.flop_counter.FlopCounterMode` counts matmul-like aten ops
(mm, bmm, addmm, baddbmm, convolution, and SDPA's CUDA flash / efficient /
cuDNN kernels), 2 FLOPs per multiply-add, and nothing else, so it checks the
work a forward executes: `performed_flops()` where the variant declares it,
else `flops()`. The registry-wide test runs over whatever the registry holds
today (other variants arrive all the time), on one small case: B=1, H=2,
N=M=256, d=32, forward, CPU, float32, the variant's default knobs.

Every variant is in one of three tiers:
- exact (the default): counted within 2% of the executed count;
- `MATMUL_SUBSET`: `flops()` also counts elementwise work the counter cannot
  see, so the counter must see some matmuls and never more than `flops()`;
- `COUNTER_BLIND`: the counter cannot check it at all, for the reason given;
  skipped without running.
A new variant that fails the exact tier must be put in one of the maps, with
its reason, by its author.
"""

from __future__ import annotations

import pytest
import torch
from tiny_suites import skip_unless_supported
from torch.utils.flop_counter import FlopCounterMode

from attnbench.attention.flops import attention_flops
from attnbench.attention.masks import causal_mask
from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs
from attnbench.measure.native import NativeLibrary
from attnbench.variants import _recurrent as recurrent
from attnbench.variants import _recurrent_kernels as recurrent_kernels
from attnbench.variants._recurrent_kernels import CHAIN_SOURCE
from attnbench.variants.deltanet import delta_form_in_c_flops
from attnbench.variants.retention import whole_form_in_c_flops

TOLERANCE = 0.02

COUNTER_BLIND = {
    "sdpa-flash": "on the CPU SDPA's flash backend is aten::_scaled_dot_product_flash_attention_for_cpu, which has "
                  "no FlopCounterMode formula (only the CUDA flash/efficient/cuDNN ops do): it counts 0",
    "sdpa-efficient": "CUDA only; the counter does have a formula for its CUDA kernel (a cuda test could check it)",
    "sdpa-cudnn": "CUDA only, float16/bfloat16",
    "luong-dot": "its scores and weighted sum go through SDPA's CPU flash kernel: counted as 0, as sdpa-flash",
    "luong-general": "only its key projection is an mm; the attention itself is SDPA's CPU flash kernel (not counted)",
    "additive": "its N·M·attn_dim scores are elementwise (broadcast add, tanh, product with v, sum): only the "
                "projections and P·V are matmuls, about 27% of flops() at this size",
    "luong-concat": "the same chunked tanh scorer as additive: elementwise scores are not counted",
    "mamba-scan": "the selective scan is elementwise (exp, multiply, add along time) in C or a compiled kernel; only "
                  "the projections are matmuls (about 40% of flops())",
    "flex": "runs a torch.compile'd flex_attention; FlopCounterMode cannot run through the compiled kernel (it raises)",
    "longformer-flex": "compiled flex_attention with a block mask, as flex: the counter cannot trace it",
    "flash-attn": "the flash-attn package's CUDA kernel; not on the CPU",
    "xformers": "xFormers' CUDA kernels; not on the CPU",
}

MATMUL_SUBSET = {
    "deltanet": "the UT transform's triangular solve (torch.linalg.solve_triangular, Q² per step) is in "
                "performed_flops() but has no FlopCounterMode formula; the matmuls are counted exactly",
    "gated-deltanet": "the same triangular solve as deltanet",
    "linear": "φ(x) = elu(x) + 1 and the normaliser (row sums, division) are elementwise",
    "performer": "the random-feature map's exp, its stabiliser and the normaliser are elementwise",
}

# Every variant of softmax attention must count the same FLOPs; these must be among them.
SOFTMAX_VARIANTS = ("naive", "sdpa-math", "sdpa-flash", "flash-tiled", "flex")
# (batch, heads, seq_len, kv_len, head_dim): square, more keys than queries, fewer, a single query.
SHAPES = [(1, 2, 128, 128, 32), (2, 3, 64, 200, 16), (1, 2, 150, 90, 8), (2, 1, 1, 77, 16)]


def executed_flops(variant, case: Case) -> int:
    """What the forward runs: `performed_flops` where the variant declares it, else `flops`."""
    performed = variant.performed_flops(case)
    return int(variant.flops(case) if performed is None else performed)


def small_case(name: str, variant) -> Case:
    """Non-causal, or causal for a variant that has only the causal form (the linear recurrences)."""
    params = dict(variant.params)
    if name == "longformer":
        params["window"] = 16      # a sparse band, so the banded chunks run (a dense band is one SDPA call: not counted)
    case = Case(variant=name, seq_len=256, heads=2, head_dim=32, dtype="float32", device="cpu", mode="fwd",
                params=params)
    causal = Case.from_dict({**case.to_dict(), "causal": True})
    return causal if not variant.supports(case) and variant.supports(causal) else case


def counted_flops(variant, case: Case) -> tuple[int, dict[str, int]]:
    inputs = make_inputs(case)
    forward = variant.prepare(case, inputs)
    with torch.inference_mode():
        forward()  # lazy initialisation outside the count
        with FlopCounterMode(display=False) as counter:
            forward()
    per_op = {str(op): count for op, count in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), per_op


def counter_checkable() -> list[str]:
    """The registered variants FlopCounterMode can check here: not blind to it, and able to run the small case."""
    registry = default_registry()
    return [name for name in registry.names()
            if name not in COUNTER_BLIND and registry.get(name).supports(small_case(name, registry.get(name)))]


def test_the_counter_checks_every_variant_it_is_not_declared_blind_to():
    names = set(default_registry().names())
    assert set(COUNTER_BLIND) <= names, f"COUNTER_BLIND names unregistered variants: {set(COUNTER_BLIND) - names}"
    assert {"naive", "sdpa-math", "flash-tiled", "linear", "performer"} <= set(counter_checkable())


def without_the_c_kernels(monkeypatch) -> None:
    """As where recurrent_kernels.c could not be built: the recurrences run their torch forms, which the counter
    sees, and count those (`Recurrence.runs_in_c` is False); the C forms' counts are checked in
    `test_the_c_forms_count_the_products_their_loops_run`."""
    unbuilt = NativeLibrary(source=CHAIN_SOURCE, library=None, reason="not built (test_flops)")
    monkeypatch.setattr(recurrent, "native_chain", lambda: unbuilt)
    monkeypatch.setattr(recurrent_kernels, "native_chain", lambda: unbuilt)


@pytest.mark.parametrize("name", counter_checkable())
def test_flops_against_flop_counter(name, monkeypatch):
    variant = default_registry().get(name)
    case = small_case(name, variant)
    without_the_c_kernels(monkeypatch)
    declared = executed_flops(variant, case)
    counted, per_op = counted_flops(variant, case)
    if name in MATMUL_SUBSET:
        assert 0 < counted <= declared * (1 + TOLERANCE), (
            f"{name}: the counter saw {counted} FLOPs ({per_op}), flops() says {declared}; the matmuls it sees "
            f"must be part of flops() ({MATMUL_SUBSET[name]})")
        return
    assert counted == pytest.approx(declared, rel=TOLERANCE), (
        f"{name}: performed_flops() or flops() = {declared}, FlopCounterMode counted {counted} ({per_op}). If the "
        "counter cannot see this variant's work, add it to COUNTER_BLIND or MATMUL_SUBSET in tests/test_flops.py "
        "with the reason")


def lower_times_matrix(rows: int, block: int) -> int:
    """Inner terms of recurrent_kernels.c's product with a lower-triangular A, counted as its loops run: whole
    blocks of `block` rows read the columns up to the block's last row, the rest one row at a time."""
    terms, row = 0, 0
    while row + block <= rows:
        terms += block * (row + block)
        row += block
    return terms + sum(r + 1 for r in range(row, rows))


@pytest.mark.parametrize("seq_len, chunk, dtype", [(4096, 32, "float32"), (100, 32, "float32"), (70, 16, "float64"),
                                                   (5, 8, "float32")])
def test_the_c_forms_count_the_products_their_loops_run(seq_len, chunk, dtype):
    """gla's and retnet's form in C (gated_forward): per chunk of `rows` steps the scores (rows × chunk from d_k),
    their lower triangle times V, and the entering and end states; the delta rules' (delta_forward): K Kᵀ and
    Q Kᵀ, T by substitution (row t subtracts rows 0 … t−1, row c of c + 1 entries), Γ K S and Γ Q S, T and
    the scores times a rows × d_v matrix, and K̃ᵀ U' into S. Summed here chunk by chunk, loop by loop."""
    dk, dv = 24, 40
    block = 8 if dtype == "float32" else 4
    gated = delta = 0
    for start in range(0, seq_len, chunk):
        rows = min(chunk, seq_len - start)
        states = 2 * rows * dk * dv                                       # one product of S with rows × d_k
        gated += 2 * rows * chunk * dk + 2 * lower_times_matrix(rows, block) * dv + 2 * states
        substitution = sum(2 * (c + 1) for t in range(rows) for c in range(t))
        delta += 4 * rows * chunk * dk + substitution + 3 * states + 4 * lower_times_matrix(rows, block) * dv
    case = Case(variant="gla", seq_len=seq_len, head_dim=dk, v_head_dim=dv, dtype=dtype, causal=True)
    assert whole_form_in_c_flops(seq_len, chunk, dk, dv, case) == gated
    assert delta_form_in_c_flops(seq_len, chunk, dk, dv, case) == delta
    projections = {"gla": 4 * dk * 16, "retnet": 0, "deltanet": 2 * dk, "gated-deltanet": 4 * dk}
    for name, per_step in projections.items():
        variant = default_registry().get(name)
        ran = Case(variant=name, seq_len=seq_len, batch=2, heads=3, head_dim=dk, v_head_dim=dv, dtype=dtype,
                   causal=True, params={**variant.params, "chunk": chunk})
        if variant.runs_in_c(ran):
            form = gated if name in ("gla", "retnet") else delta
            assert variant.performed_flops(ran) == 2 * 3 * (seq_len * per_step + form)


def test_exclusion_maps_name_known_variants():
    registry = default_registry()
    known = set(registry.names()) | {failure.entry_point for failure in registry.failures}
    assert not set(COUNTER_BLIND) & set(MATMUL_SUBSET)
    unknown = (set(COUNTER_BLIND) | set(MATMUL_SUBSET)) - known
    assert not unknown, f"maps name variants that are not registered: {sorted(unknown)}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}N{}M{}d{}".format(*s))
def test_softmax_attention_variants_share_one_count(shape, causal):
    """Every registered variant whose `computes` is softmax attention returns 4·B·H·(visible pairs)·d."""
    batch, heads, seq_len, kv_len, head_dim = shape
    registry = default_registry()
    names = [n for n in registry.names() if registry.get(n).computes == "softmax_attention"]
    assert set(SOFTMAX_VARIANTS) <= set(names), names
    visible = int(causal_mask(seq_len, kv_len).sum()) if causal else seq_len * kv_len   # counted, not a formula
    expected = 4 * batch * heads * visible * head_dim
    counts = {}
    for name in names:
        variant = registry.get(name)
        case = Case(variant=name, batch=batch, heads=heads, seq_len=seq_len, kv_len=kv_len, head_dim=head_dim,
                    causal=causal, params=dict(variant.params))
        counts[name] = variant.flops(case)
    assert counts == dict.fromkeys(names, expected)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_len, window, global_tokens",
                         [(256, 16, 0), (256, 16, 5), (100, 7, 3), (64, 256, 0), (300, 40, 300), (1, 3, 2)])
def test_longformer_variants_count_the_pattern(seq_len, window, global_tokens, causal):
    """longformer and longformer-flex compute one function: flops() is q kᵀ and P v over its visible pairs."""
    from attnbench.variants.longformer import allowed_pattern

    registry = default_registry()
    params = {"window": window, "global_tokens": global_tokens}
    case = Case(variant="longformer", batch=2, heads=3, seq_len=seq_len, head_dim=16, causal=causal, params=params)
    visible = int(allowed_pattern(seq_len, window, min(global_tokens, seq_len), causal).sum())
    counts = {name: registry.get(name).flops(case) for name in ("longformer", "longformer-flex")}
    assert registry.get("longformer").computes == registry.get("longformer-flex").computes
    assert counts == dict.fromkeys(counts, 4 * 2 * 3 * visible * 16)
    assert registry.get("longformer").performed_flops(case) >= counts["longformer"]   # its padded slots


# (name, knobs, (batch, heads, seq_len, kv_len, head_dim), causal): work each forward really executes.
EXECUTED = [
    ("naive", {}, (1, 2, 128, 128, 32), True),
    ("naive", {}, (2, 2, 96, 160, 16), True),
    ("naive", {}, (1, 3, 160, 96, 16), False),
    ("sdpa-math", {}, (1, 2, 128, 128, 32), True),
    ("sdpa-math", {}, (2, 2, 96, 160, 16), True),
    ("sdpa-math", {}, (1, 3, 160, 96, 16), False),
    ("flash-tiled", {"block": 32, "query_block": 48}, (1, 2, 200, 200, 16), True),
    ("flash-tiled", {"block": 32, "query_block": 64}, (1, 2, 96, 160, 16), True),
    ("flash-tiled", {"block": 32, "query_block": 64}, (1, 2, 160, 96, 16), True),
    ("flash-tiled", {"block": 32, "query_block": 64}, (1, 2, 160, 96, 16), False),
    ("mamba2-ssd", {"chunk": 64}, (1, 2, 256, 256, 32), False),
    ("mamba2-ssd", {"chunk": 32}, (2, 2, 300, 300, 16), True),
    ("mamba2-ssd", {"chunk": 16}, (1, 1, 1100, 1100, 8), False),
    ("retnet", {"chunk": 64}, (1, 2, 256, 256, 32), True),
    ("retnet", {"chunk": 48}, (2, 2, 300, 300, 16), True),
    ("gla", {"chunk": 64}, (1, 2, 256, 256, 32), True),
    ("gla", {"chunk": 24}, (2, 1, 300, 300, 16), True),
    ("bigbird", {"block": 32, "window": 1, "global_blocks": 2, "random_blocks": 3}, (1, 2, 300, 300, 16), False),
    ("bigbird", {"block": 16, "window": 2, "global_blocks": 1, "random_blocks": 2}, (1, 2, 300, 300, 16), True),
    ("bigbird", {"block": 32, "window": 1, "global_blocks": 2, "random_blocks": 3}, (2, 2, 5, 400, 16), True),
    ("longformer", {"window": 16, "global_tokens": 0}, (1, 2, 256, 256, 32), False),
    ("longformer", {"window": 16, "global_tokens": 4}, (1, 2, 256, 256, 32), True),
    ("longformer", {"window": 16, "global_tokens": 3}, (2, 1, 512, 512, 16), False),   # banded (sparse band)
]


@pytest.mark.parametrize("name, knobs, shape, causal", EXECUTED,
                         ids=["{}-{}-N{}M{}".format(e[0], "causal" if e[3] else "full", e[2][2], e[2][3])
                              for e in EXECUTED])
def test_executed_flops_match_flop_counter(name, knobs, shape, causal, monkeypatch):
    """The matmul work a real CPU forward runs, as FlopCounterMode counts it, within 2% of what the variant declares.

    Under a causal mask naive and sdpa-math still run both full N×M products, so their performed count is
    about twice `flops()`; flash-tiled skips the key blocks past each query block's last visible key. The
    recurrences run their torch forms (`without_the_c_kernels`).
    """
    without_the_c_kernels(monkeypatch)
    batch, heads, seq_len, kv_len, head_dim = shape
    variant = default_registry().get(name)
    case = Case(variant=name, batch=batch, heads=heads, seq_len=seq_len, kv_len=kv_len, head_dim=head_dim,
                causal=causal, dtype="float32", device="cpu", mode="fwd", params={**variant.params, **knobs})
    assert not variant.unsupported_reasons(case)
    counted, per_op = counted_flops(variant, case)
    assert counted == pytest.approx(executed_flops(variant, case), rel=TOLERANCE), (
        f"performed {variant.performed_flops(case)}, flops {variant.flops(case)}, counter {counted} ({per_op})")
    if name in ("naive", "sdpa-math"):
        assert variant.performed_flops(case) == attention_flops(case, pairs=seq_len * kv_len)
    assert variant.flops(case) <= executed_flops(variant, case)      # useful work is never more than what runs


def test_fwd_bwd_counts_the_backward_as_two_and_a_half_forwards():
    """Through measure_case: a fwd_bwd cell stores 3.5× the forward's flops and performed_flops."""
    from attnbench.core.settings import MeasureSettings
    from attnbench.measure.cell import measure_case
    from attnbench.measure.cell.derived import BACKWARD_FLOPS_FACTOR

    assert BACKWARD_FLOPS_FACTOR == 2.5
    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.05, memory=False, accuracy=False, telemetry=False)
    registry = default_registry()
    stored = {}
    for name in ("naive", "sdpa-math"):
        for mode in ("fwd", "fwd_bwd"):
            case = Case(variant=name, seq_len=64, kv_len=48, heads=2, head_dim=16, causal=True, mode=mode)
            result = measure_case(case, registry.get(name), settings)
            assert result.status == "ok", result.reason
            stored[name, mode] = (result.flops, result.performed_flops)
    visible = int(causal_mask(64, 48).sum())
    for name in ("naive", "sdpa-math"):
        assert stored[name, "fwd"] == (4 * 2 * visible * 16, 4 * 2 * 64 * 48 * 16)
        assert stored[name, "fwd_bwd"] == tuple(round(3.5 * count) for count in stored[name, "fwd"])
        assert all(isinstance(count, int) for count in stored[name, "fwd_bwd"])
    flash = Case(variant="sdpa-flash", seq_len=64, heads=2, head_dim=16, mode="fwd_bwd")
    result = measure_case(flash, registry.get("sdpa-flash"), settings)
    assert result.status == "ok", result.reason
    assert (result.flops, result.performed_flops) == (round(3.5 * 4 * 2 * 64 * 64 * 16), None)


def test_counter_conventions_match_attention_flops():
    """The formula flops() implementations share: 4·B·H·N·M·d for q·kᵀ and P·v, as the counter counts bmm."""

    case = Case(variant="naive", seq_len=128, kv_len=96, heads=3, head_dim=16)
    q, k, v = make_inputs(case).tensors()
    with FlopCounterMode(display=False) as counter:
        torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
    assert counter.get_total_flops() == attention_flops(case) == 4 * 3 * 128 * 96 * 16


# ---------------------------------------------------------------- memory: measurement against the analytic model


def test_naive_cpu_peak_matches_its_memory_model():
    """VmHWM around one forward against naive.memory_model: scores and probabilities (N×M each) plus output."""
    from attnbench.measure.cell.setup import Step
    from attnbench.measure.memory import cpu_peak_bytes

    variant = default_registry().get("naive")
    case = Case(variant="naive", seq_len=1024, heads=8, head_dim=64)
    inputs = make_inputs(case)
    step = Step(case, inputs, variant.prepare(case, inputs))
    step()
    measured = cpu_peak_bytes(step.forward_only)
    predicted = variant.memory_model(case)
    assert predicted == 2 * 8 * 1024 * 1024 * 4 + 8 * 1024 * 64 * 4
    assert measured.peak_bytes == pytest.approx(predicted, rel=0.15), (measured, predicted)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["naive", "sdpa-flash", "sdpa-efficient", "sdpa-math"])
def test_flops_on_cuda(name):
    """On CUDA the counter has formulas for SDPA's flash and efficient kernels, so those are checked there."""
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=256, heads=2, head_dim=64, dtype="float16", device="cuda")
    skip_unless_supported(variant, case)
    counted, per_op = counted_flops(variant, case)
    assert counted == pytest.approx(executed_flops(variant, case), rel=TOLERANCE), per_op

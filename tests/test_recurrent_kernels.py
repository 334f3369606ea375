"""The chunked recurrences in C (their loop over chunks; GLA and RetNet whole): equal to the torch forms and the
plain recurrences, used only where nothing is traced."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import attnbench.variants._recurrent as recurrent
import attnbench.variants.deltanet as deltanet
import attnbench.variants.retention as retention
from attnbench import AttentionInputs, Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs
from attnbench.variants._recurrent_kernels import (
    CHAIN_SOURCE,
    chain_native,
    delta_forward_native,
    gated_forward_native,
    native_chain,
)

needs_native = pytest.mark.skipif(not native_chain().available, reason=f"no native chain: {native_chain().reason}")


def _diagonal_chain_in_torch(a, b, first):
    """The states entering every chunk and the last, one torch step per chunk (a_j scales the rows of S_j)."""
    s, entering = first, []
    for j in range(b.shape[1]):
        entering.append(s)
        s = a[:, j, :, None] * s + b[:, j]
    return torch.stack(entering, dim=1), s


def _random(*shape, generator, scale=1.0):
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


def _assert_close(got, wanted, dtype, bound):
    """Each result has the dtype and the shape of its float64 reference and is within `bound` of it (relative L2)."""
    for ours, want in zip(got, wanted, strict=True):
        assert ours.dtype == dtype and ours.shape == want.shape
        assert float((ours.double() - want).norm() / want.norm()) < bound


SIZES = [
    (8, 16, 32, 64, 64),   # the benchmark's heads: whole blocks of rows and columns
    (3, 5, 6, 7, 33),      # rows and columns that leave remainders of the C blocks
    (1, 1, 4, 4, 32),      # one chunk: only the final state is computed
]


@needs_native
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_diagonal_chain_equals_the_torch_loop(sizes, dtype):
    items, chunks, _, key_dim, value_dim = sizes
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(items, chunks, key_dim, generator=generator, dtype=torch.float64)
    b, first = _random(items, chunks, key_dim, value_dim, generator=generator), \
        _random(items, key_dim, value_dim, generator=generator)
    got = chain_native(*(t.to(dtype) for t in (a, b, first)))
    _assert_close(got, _diagonal_chain_in_torch(a, b, first), dtype, 1e-6 if dtype == torch.float32 else 1e-13)


def _delta_rule_in_torch(q, k, v, beta, log_alpha, state):
    """S_t = α_t (S_{t−1} − β_t k_tᵀ (k_t S_{t−1})) + β_t k_tᵀ v_t and o_t = q_t S_t, one float64 step at a time."""
    s = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=torch.float64) if state is None else state
    outputs = []
    for t in range(k.shape[2]):
        k_t, b_t = k[:, :, t, :, None], beta[:, :, t, None, None]         # (B, H, d_k, 1), (B, H, 1, 1)
        s = s - b_t * k_t @ (k_t.transpose(-2, -1) @ s)
        s = s if log_alpha is None else torch.exp(log_alpha[:, :, t, None, None]) * s
        s = s + b_t * k_t @ v[:, :, t, None, :]
        outputs.append((q[:, :, t, None, :] @ s).squeeze(-2))
    return torch.stack(outputs, dim=2), s


@needs_native
@pytest.mark.parametrize("sizes", [(1, 8, 64, 64, 64, 32), (2, 3, 70, 12, 33, 16), (1, 2, 5, 4, 7, 8)])
@pytest.mark.parametrize("decayed", [False, True])
@pytest.mark.parametrize("entering", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_delta_forward_equals_the_plain_recurrence(sizes, decayed, entering, dtype):
    batch, heads, seq_len, key_dim, value_dim, chunk = sizes
    generator = torch.Generator().manual_seed(1)
    q, k = (_random(batch, heads, seq_len, key_dim, generator=generator) for _ in range(2))
    q, k = q / q.norm(dim=-1, keepdim=True) * key_dim ** -0.5, k / k.norm(dim=-1, keepdim=True)
    v = _random(batch, heads, seq_len, value_dim, generator=generator)
    beta = torch.rand(batch, heads, seq_len, generator=generator, dtype=torch.float64)
    log_alpha = -torch.rand(batch, heads, seq_len, generator=generator, dtype=torch.float64) if decayed else None
    state = _random(batch, heads, key_dim, value_dim, generator=generator) if entering else None
    got = delta_forward_native(*(None if t is None else t.to(dtype) for t in (q, k, v, beta, log_alpha)), chunk,
                               None if state is None else state.to(dtype))
    _assert_close(got, _delta_rule_in_torch(q, k, v, beta, log_alpha, state), dtype,
                  2e-6 if dtype == torch.float32 else 1e-13)


@needs_native
def test_the_thread_count_does_not_change_a_single_bit_of_the_delta_forward():
    generator = torch.Generator().manual_seed(2)
    q, k, v = (_random(2, 3, 40, 16, generator=generator, scale=0.25).float() for _ in range(3))
    beta, log_alpha = torch.rand(2, 3, 40), -torch.rand(2, 3, 40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = delta_forward_native(q, k, v, beta, log_alpha, 16)
        torch.set_num_threads(2)
        two = delta_forward_native(q, k, v, beta, log_alpha, 16)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, two, strict=True))


def test_operands_that_do_not_match_are_refused_with_their_shapes():
    b, first = torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8)
    with pytest.raises(ValueError, match=r"a \(2, 3, 4\) does not match b \(2, 3, 8, 8\); expected a \(2, 3, 8\)"):
        chain_native(torch.zeros(2, 3, 4), b, first)
    q = torch.zeros(2, 3, 10, 8)
    with pytest.raises(ValueError, match=r"beta \(2, 3, 9\) does not match q \(2, 3, 10, 8\); expected beta \(2, 3, 10\)"):
        delta_forward_native(q, q, q, torch.zeros(2, 3, 9), None, 4)
    with pytest.raises(ValueError, match=r"v \(2, 3, 9, 8\) does not match q \(2, 3, 10, 8\); expected v \(2, 3, 10, 8\)"):
        gated_forward_native(None, torch.zeros(3, 8), q, q, torch.zeros(2, 3, 9, 8), 1.0, 4, 1.0)


@needs_native
@pytest.mark.parametrize("name", ["retnet", "gla", "deltanet", "gated-deltanet"])
def test_the_variants_run_the_c_chain_in_fwd_cells_and_match_their_torch_loop(name, monkeypatch):
    variant = default_registry().get(name)
    case = Case(variant=name, seq_len=200, batch=2, heads=3, head_dim=16, causal=True, params={"chunk": 32})
    assert variant.execution(case) == "chunked, in C"
    assert variant.execution(replace(case, mode="fwd_bwd")) == "chunked"
    assert variant.execution(replace(case, kv_len=260, seq_len=4)) == "recurrent step from the prefix's state"
    with torch.inference_mode():
        inputs = make_inputs(case)
        native = variant.prepare(case, inputs)()
        want = variant.reference(case, AttentionInputs(*(t.double() for t in inputs.tensors())))
        for module in (recurrent, deltanet, retention):
            monkeypatch.setattr(module, "chain_runs_native", lambda *tensors: False)
        in_torch = variant.prepare(case, inputs)()
    assert float((native.double() - want).norm() / want.norm()) < 2e-6
    assert float((native - in_torch).norm() / in_torch.norm()) < 1e-6


def _gated_recurrence_in_torch(log_gates, q, k, v, state):
    """S_t = diag(e^(g_t)) S_{t−1} + k_tᵀ v_t and o_t = q_t S_t, one float64 step at a time: o and S_N."""
    s = torch.zeros(*k.shape[:2], k.shape[-1], v.shape[-1], dtype=torch.float64) if state is None else state
    outputs = []
    for t in range(k.shape[2]):
        s = torch.exp(log_gates[:, :, t, :, None]) * s + k[:, :, t, :, None] * v[:, :, t, None, :]
        outputs.append((q[:, :, t, None, :] @ s).squeeze(-2))
    return torch.stack(outputs, dim=2), s


GATED_SIZES = [
    (1, 8, 64, 64, 64, 32),    # the benchmark's heads: whole chunks and whole blocks of rows and columns
    (2, 3, 70, 12, 33, 16),    # 70 = 4 chunks of 16 and 6 rows; d_v leaves a remainder of the C blocks
    (1, 2, 5, 4, 7, 8),        # one chunk, shorter than the chunk
]


@needs_native
@pytest.mark.parametrize("sizes", GATED_SIZES)
@pytest.mark.parametrize("gates", ["gla", "retnet"])
@pytest.mark.parametrize("entering", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_gated_forward_equals_the_plain_recurrence(sizes, gates, entering, dtype):
    batch, heads, seq_len, key_dim, value_dim, chunk = sizes
    generator = torch.Generator().manual_seed(3)
    q, k = (_random(batch, heads, seq_len, key_dim, generator=generator, scale=key_dim ** -0.5) for _ in range(2))
    v = _random(batch, heads, seq_len, value_dim, generator=generator)
    state = _random(batch, heads, key_dim, value_dim, generator=generator) if entering else None
    if gates == "gla":
        logits, bias = _random(batch, heads, seq_len, key_dim, generator=generator), \
            _random(heads, 1, key_dim, generator=generator)
        log_gates = torch.nn.functional.logsigmoid(logits + bias) / 16      # GLA's gate, over its normaliser 16
    else:
        logits, bias = None, -torch.rand(heads, 1, generator=generator, dtype=torch.float64).expand(heads, key_dim) / 8
        log_gates = bias[None, :, None].expand(batch, heads, seq_len, key_dim)   # constant per head and channel
    got = gated_forward_native(*(None if t is None else t.to(dtype) for t in (logits, bias, q, k, v)), 16.0, chunk,
                               1.0, None if state is None else state.to(dtype))
    _assert_close(got, _gated_recurrence_in_torch(log_gates, q, k, v, state), dtype,
                  1e-6 if dtype == torch.float32 else 1e-13)


@needs_native
def test_the_c_gated_forward_refuses_gates_steeper_than_its_bound_and_is_bitwise_the_same_on_any_thread_count():
    generator = torch.Generator().manual_seed(4)
    q, k, logits = (_random(2, 3, 40, 8, generator=generator).float() for _ in range(3))
    v, bias = _random(2, 3, 40, 8, generator=generator).float(), torch.zeros(3, 8)
    steepest = float(-(torch.nn.functional.logsigmoid(logits.double()) / 16).min())
    assert gated_forward_native(logits, bias, q, k, v, 16.0, 16, steepest * 0.99) is None
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gated_forward_native(logits, bias, q, k, v, 16.0, 16, steepest)
        torch.set_num_threads(2)
        two = gated_forward_native(logits, bias, q, k, v, 16.0, 16, steepest)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, two, strict=True))


@needs_native
def test_gla_with_gates_too_steep_for_one_block_runs_the_sub_blocks():
    variant = default_registry().get("gla")
    case = Case(variant="gla", seq_len=96, batch=1, heads=2, head_dim=16, causal=True, params={"chunk": 32})
    inputs = make_inputs(case)
    weights = {name: w.clone() for name, w in variant.weights(case, inputs).items()}
    weights["gate_bias"].fill_(-80.0)                                      # log α ≈ −5 per step: 32 steps pass e^80
    steep = AttentionInputs(*inputs.tensors(), weights=weights)
    with torch.inference_mode():
        q, k, v = steep.tensors()
        q_, k_ = variant.prepared_inputs(q, k)
        assert retention.gla_chunked_native(q_, k_, v, variant.mixer_weights(case, steep, torch.float32), 32) is None
        got = variant.prepare(case, steep)()
        want = variant.reference(case, AttentionInputs(*(t.double() for t in steep.tensors()), weights=weights))
    assert torch.isfinite(got).all()
    assert float((got.double() - want).norm() / want.norm()) < 2e-6


def test_the_fla_kernels_choose_nothing():
    case = Case(variant="fla-gla", seq_len=64, causal=True, device="cuda")
    assert default_registry().get("fla-gla").execution(case) is None


def test_the_chain_source_ships_beside_its_module():
    assert CHAIN_SOURCE.is_file() and CHAIN_SOURCE.suffix == ".c"

"""The 2024-25 mixers: retnet, gla, deltanet, gated-deltanet and bigbird against their float64 definitions.

- each chunked recurrence equals its plain sequential recurrence in float64, at
  chunk sizes that divide the length and that do not, from a zero state and
  from a given one, and returns the same final state;
- the sequential references are checked against independent formulas: RetNet's
  parallel form Σ_{s<=t} γ^(t−s) (q_t·k_s) v_s, and the delta rule's defining
  property (with β = 1 the state returns v_t for k_t right after storing it);
- a decode step against the state of its prefix equals the whole sequence's
  recurrence read at the last queries, and moves the state, not a KV cache;
- BigBird's fast path equals the dense masked softmax of its pattern, and the
  pattern is what the paper says (window, global, random blocks, no repeats);
- learned weights are declared and move the output when a trainer passes others.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.variant import AttentionInputs
from attnbench.measure.accuracy import error_metrics
from attnbench.measure.inputs import make_inputs, upcast
from attnbench.variants.bigbird import allowed_blocks, block_table
from attnbench.variants.deltanet import delta_rule_chunked, delta_rule_sequential, normalised
from attnbench.variants.retention import (
    gla_chunked,
    gla_sequential,
    retention_chunked,
    retention_sequential,
    retnet_log_decays,
)

REGISTRY = default_registry()
RECURRENCES = ("retnet", "gla", "deltanet", "gated-deltanet")


def _tensors(*shape, seed=0, count=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) for _ in range(count)]


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 200])
def test_retention_chunked_equals_the_recurrence(chunk):
    q, k, v = _tensors(2, 3, 150, 16)
    state = _tensors(2, 3, 16, 16, seed=1, count=1)[0]
    log_gamma = retnet_log_decays(3, torch.float64)
    for start in (None, state):
        got, got_state = retention_chunked(q, k, v, log_gamma, chunk, start)
        want, want_state = retention_sequential(q, k, v, log_gamma, start)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_state, want_state)


def test_retention_recurrence_is_the_parallel_form():
    """o_t = Σ_{s<=t} γ^(t−s) (q_t·k_s) v_s: RetNet's parallel retention, written as a loop over pairs."""
    q, k, v = _tensors(1, 2, 12, 4)
    log_gamma = retnet_log_decays(2, torch.float64)
    out, _ = retention_sequential(q, k, v, log_gamma)
    for h in range(2):
        gamma = 1 - 2 ** (-5 - h)
        for t in range(12):
            want = sum(gamma ** (t - s) * float(q[0, h, t] @ k[0, h, s]) * v[0, h, s] for s in range(t + 1))
            torch.testing.assert_close(out[0, h, t], want)


@pytest.mark.parametrize("chunk", [1, 7, 16, 32, 64, 200])
def test_gla_chunked_equals_the_recurrence(chunk):
    q, k, v = _tensors(2, 3, 150, 16)
    gates = torch.nn.functional.logsigmoid(_tensors(2, 3, 150, 16, seed=2, count=1)[0] * 3)   # strong gates too
    state = _tensors(2, 3, 16, 16, seed=1, count=1)[0]
    for start in (None, state):
        got, got_state = gla_chunked(q, k, v, gates, chunk, start)
        want, want_state = gla_sequential(q, k, v, gates, start)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_state, want_state)


@pytest.mark.parametrize("gated", [False, True], ids=["deltanet", "gated"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 200])
def test_delta_rule_chunked_equals_the_recurrence(chunk, gated):
    q, k, v = _tensors(2, 3, 150, 16)
    q, k = normalised(q), normalised(k)
    beta = torch.sigmoid(_tensors(2, 3, 150, seed=3, count=1)[0])
    log_alpha = -torch.rand(2, 3, 150, generator=torch.Generator().manual_seed(4), dtype=torch.float64) if gated else None
    state = _tensors(2, 3, 16, 16, seed=1, count=1)[0]
    for start in (None, state):
        got, got_state = delta_rule_chunked(q, k, v, beta, log_alpha, chunk, start)
        want, want_state = delta_rule_sequential(q, k, v, beta, log_alpha, start)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_state, want_state)


def test_delta_rule_with_beta_one_recalls_what_it_just_stored():
    """With β = 1 and ‖k‖ = 1 the delta rule overwrites: S_t read at k_t returns exactly v_t."""
    _, k, v = _tensors(1, 1, 20, 8)
    k = normalised(k)
    _, state = delta_rule_sequential(k[:, :, :1], k, v, torch.ones(1, 1, 20))
    torch.testing.assert_close((k[0, 0, -1] @ state[0, 0]), v[0, 0, -1])


def _case(name: str, **fields) -> Case:
    variant = REGISTRY.get(name)
    fields = {"batch": 2, "heads": 2, "seq_len": 100, "head_dim": 16, "causal": True, **fields}
    fields["params"] = {**variant.params, **fields.get("params", {})}
    return Case(variant=name, **fields)


@pytest.mark.parametrize("name", RECURRENCES)
def test_decode_step_continues_the_prefix_state(name):
    """4 new tokens against 96 earlier ones: the step from the prefix's state is the whole recurrence's last rows."""
    variant = REGISTRY.get(name)
    case = _case(name, seq_len=4, kv_len=100, dtype="float64", params={"chunk": 16})
    inputs = make_inputs(case)
    out = variant.prepare(case, inputs)()
    full = _case(name, seq_len=100, dtype="float64", params={"chunk": 16})
    q_full = torch.cat([inputs.k[:, :, :96], inputs.q], dim=2)                 # any queries before the last 4
    whole = variant.reference(full, AttentionInputs(q_full, inputs.k, inputs.v))
    torch.testing.assert_close(out, whole[:, :, -4:])
    torch.testing.assert_close(out, variant.reference(case, inputs))


@pytest.mark.parametrize("name", RECURRENCES)
def test_decode_moves_the_state_and_the_state_does_not_grow(name):
    variant = REGISTRY.get(name)
    short, long = (_case(name, seq_len=1, kv_len=m, head_dim=64, batch=1, heads=8) for m in (1024, 32768))
    assert variant.state_size(short) == variant.state_size(long) == 8 * 64 * 64
    new_tokens = 8 * 1 * (4 * 64) * 4                                          # q, k, v and the output of one token
    assert variant.bytes_moved(short) == variant.bytes_moved(long) == 2 * 8 * 64 * 64 * 4 + new_tokens
    assert variant.bytes_moved(long) < long.bytes_moved / 10                  # softmax's KV cache at 32768
    assert variant.bytes_moved(_case(name)) is None                           # a whole sequence: q, k, v and out


@pytest.mark.parametrize("name", RECURRENCES)
def test_recurrences_say_why_not(name):
    variant = REGISTRY.get(name)
    assert any("causal recurrence" in r for r in variant.unsupported_reasons(_case(name, causal=False)))
    assert any("kv_len >= seq_len" in r for r in variant.unsupported_reasons(_case(name, kv_len=50)))
    decode_backward = _case(name, seq_len=4, kv_len=100, mode="fwd_bwd")
    assert any("forward only" in r for r in variant.unsupported_reasons(decode_backward))
    assert variant.supports(variant.probe_case("cpu"))


@pytest.mark.parametrize("name", ["gla", "deltanet", "gated-deltanet"])
def test_learned_weights_are_declared_and_read(name):
    """Seeded by default; a trainer's values (AttentionInputs.weights) change the output."""
    variant = REGISTRY.get(name)
    case = _case(name, dtype="float64")
    declared = variant.learned_weights(case)
    assert declared and all(w.shape[0] == case.heads for w in declared.values())
    inputs = make_inputs(case)
    seeded = variant.prepare(case, inputs)()
    given = {key: value + 0.5 for key, value in variant.weights(case, inputs).items()}
    moved = variant.prepare(case, AttentionInputs(*inputs.tensors(), weights=given))()
    assert float((moved - seeded).abs().max()) > 1e-3
    torch.testing.assert_close(moved, variant.reference(case, AttentionInputs(*inputs.tensors(), weights=given)))


# ---------------------------------------------------------------- bigbird


def test_bigbird_table_is_window_global_and_distinct_random_blocks():
    draws = torch.randn(12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for causal in (False, True):
        table = block_table(draws, window=1, global_blocks=2, random_blocks=3, causal=causal)
        assert table.shape == (12, 2 + (2 if causal else 3) + 3)
        for query, row in enumerate(table.tolist()):
            seen = [b for b in row if b >= 0]
            assert len(seen) == len(set(seen)), row                             # no block twice
            assert {0, 1} <= set(seen)
            window = {b for b in range(query - 1, query + (1 if causal else 2)) if 0 <= b < 12}
            assert window <= set(seen)
            randoms = set(row[-3:]) - {-1}
            assert not randoms & (window | {0, 1})
            if causal:
                assert all(b < query - 1 for b in randoms)
            else:
                assert len(randoms) == 3
    allowed = allowed_blocks(table)
    assert allowed.shape == (12, 12) and bool(allowed[:, :2].all())


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("fields", [
    dict(seq_len=300, params={"block": 32, "window": 1, "global_blocks": 2, "random_blocks": 3}),
    dict(seq_len=257, params={"block": 16, "window": 2, "global_blocks": 1, "random_blocks": 2}),
    dict(seq_len=64, params={"block": 64, "window": 1, "global_blocks": 2, "random_blocks": 3}),
], ids=["N300b32", "N257b16", "one-block"])
def test_bigbird_equals_the_dense_masked_softmax_of_its_pattern(fields, causal):
    variant = REGISTRY.get("bigbird")
    case = Case(variant="bigbird", batch=2, heads=2, head_dim=16, dtype="float64", causal=causal, **fields)
    inputs = make_inputs(case)
    out = variant.prepare(case, inputs)()
    torch.testing.assert_close(out, variant.reference(case, inputs))
    weights = variant.attention_weights(case, inputs)
    visible = int((weights[0, 0] > 0).sum())
    assert variant.flops(case) == 4 * 2 * 2 * 16 * int(variant.mask_mod(case)(
        None, None, torch.arange(case.seq_len)[:, None], torch.arange(case.seq_len)[None, :]).sum())
    assert visible <= case.seq_len * case.seq_len


def test_bigbird_decode_step_is_its_pattern_rows():
    variant = REGISTRY.get("bigbird")
    knobs = {"block": 16, "window": 1, "global_blocks": 1, "random_blocks": 2}
    case = Case(variant="bigbird", batch=1, heads=2, seq_len=5, kv_len=203, head_dim=8, dtype="float64",
                causal=True, params=knobs)
    inputs = make_inputs(case)
    out = variant.prepare(case, inputs)()
    torch.testing.assert_close(out, variant.reference(case, inputs))
    assert any("decode" in r for r in variant.unsupported_reasons(Case.from_dict({**case.to_dict(), "causal": False})))


def test_bigbird_covering_pattern_is_exact_softmax():
    """With every block a window block, BigBird is softmax attention."""
    from attnbench.attention.reference import softmax_attention

    variant = REGISTRY.get("bigbird")
    case = Case(variant="bigbird", batch=1, heads=2, seq_len=96, head_dim=16, params={
        "block": 16, "window": 6, "global_blocks": 0, "random_blocks": 0})
    inputs = make_inputs(case)
    out = variant.prepare(case, inputs)()
    exact = softmax_attention(*upcast(inputs).tensors(), causal=False)
    assert error_metrics(out, exact).rel_l2_error < 1e-6
    assert math.isclose(variant.flops(case), 4 * 2 * 96 * 96 * 16)

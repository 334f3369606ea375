"""MQAR quality cells: Zoology's data rules, the task text, the variant as a trained mixer, the training loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from attnbench import Case, Variant, softmax_attention
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.core.taskspec import TaskSpec, parse_task
from attnbench.measure.cell import measure_case
from attnbench.tasks.mixer import MixerError, VariantMixer
from attnbench.tasks.model import RecallModel
from attnbench.tasks.mqar import IGNORE, check_shape, recall_batch
from attnbench.tasks.train import learning_rate_factor, loss_curve, train_recall

REGISTRY = default_registry()


def test_mqar_examples_follow_zoologys_layout():
    batch = recall_batch(200, 64, 6, 40, torch.Generator().manual_seed(3))
    assert batch.inputs.shape == batch.labels.shape == (200, 64)
    for tokens, labels in zip(batch.inputs.tolist(), batch.labels.tolist(), strict=True):
        keys, values = tokens[0:12:2], tokens[1:12:2]
        assert len(set(keys)) == 6 and all(1 <= k < 20 for k in keys)             # distinct, lower half, no 0
        assert len(set(values)) == 6 and all(20 <= v < 40 for v in values)        # distinct, upper half
        pairs = dict(zip(keys, values, strict=True))
        queried = [i for i, label in enumerate(labels) if label != IGNORE]
        assert len(queried) == 6 and all(i >= 12 and (i - 12) % 2 == 0 for i in queried)
        assert sorted(tokens[i] for i in queried) == sorted(keys)                 # every key asked once
        assert all(labels[i] == pairs[tokens[i]] for i in queried)                # label: the key's value
        assert all(0 <= t < 40 for t in tokens)


def test_mqar_is_seeded_and_query_gaps_follow_the_power_law():
    one = recall_batch(8, 32, 4, 32, torch.Generator().manual_seed(5))
    two = recall_batch(8, 32, 4, 32, torch.Generator().manual_seed(5))
    assert torch.equal(one.inputs, two.inputs) and torch.equal(one.labels, two.labels)
    # With one pair, the gap of its query is drawn from p(g) ∝ a·(g+1)^(a-1) over g < (N - 2)/2 exactly.
    examples, seq_len, a = 20000, 42, 0.01
    batch = recall_batch(examples, seq_len, 1, 16, torch.Generator().manual_seed(7), power_a=a)
    gaps = ((batch.labels != IGNORE).float().argmax(dim=1) - 2) // 2
    space = (seq_len - 2) // 2
    weights = [a * (g + 1) ** (a - 1) for g in range(space)]
    expected = [w / sum(weights) for w in weights]
    for gap in (0, 1, space - 1):
        share = float((gaps == gap).float().mean())
        sigma = math.sqrt(expected[gap] * (1 - expected[gap]) / examples)
        assert abs(share - expected[gap]) < 4 * sigma, (gap, share, expected[gap])


def test_mqar_shapes_it_cannot_build_say_why():
    assert check_shape(64, 8, 128) == []
    assert any("even seq_len" in r for r in check_shape(63, 4, 128))
    assert any("seq_len >= 64" in r for r in check_shape(32, 16, 128))
    assert any("vocabulary of 16" in r for r in check_shape(64, 9, 16))
    with pytest.raises(ValueError, match="even seq_len"):
        recall_batch(2, 33, 2, 32, torch.Generator())


def test_task_text_is_canonical_and_errors_name_the_option():
    spec = parse_task("mqar:kv_pairs=8, steps=100")
    assert spec == replace(TaskSpec(kind="mqar"), kv_pairs=8, steps=100)
    assert parse_task(spec.text) == spec and spec.text.startswith("mqar:kv_pairs=8,layers=2,lr=0.01")
    assert parse_task("none").text == "none" and spec.with_options(steps=5).steps == 5
    for bad, words in (("mqa", "unknown task"), ("mqar:depth=2", "unknown option 'depth'"),
                       ("mqar:kv_pairs=2.5", "kv_pairs must be an integer"), ("mqar:lr=-1", "lr must be positive"),
                       ("mqar:power_a=2", "power_a must be in (0, 1]"), ("none:steps=1", "takes no options")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
            parse_task(bad)


def test_a_task_changes_the_case_id_but_task_none_keeps_old_ids():
    plain = Case(variant="naive", seq_len=64)
    assert plain.id == Case(variant="naive", seq_len=64, task="none").id == "ee0b0df74aa19241"
    quality = Case(variant="naive", seq_len=64, task="mqar")
    assert quality.id != plain.id and quality.is_quality and quality.label.endswith("-mqar-kv4")
    assert Case.from_dict(quality.to_dict()) == quality


def _mixer_case(**changes) -> Case:
    fields = dict(variant="naive", seq_len=16, batch=2, heads=2, head_dim=8, causal=True, mode="fwd_bwd")
    return Case(**{**fields, **changes})


def test_gradients_through_the_variant_equal_plain_autograd_of_softmax_attention():
    case = _mixer_case()
    torch.manual_seed(0)
    mixer = VariantMixer(REGISTRY.get("naive"), case, d_model=16, layer=0)
    x = torch.randn(2, 16, 16, requires_grad=True)
    out = mixer(x)
    out.square().sum().backward()
    through = [p.grad.clone() for p in (mixer.q_proj.weight, mixer.k_proj.weight, mixer.v_proj.weight)]
    grad_x = x.grad.clone()

    for p in mixer.parameters():
        p.grad = None
    x.grad = None

    def heads(t):
        return t.view(2, 16, 2, 8).transpose(1, 2)

    attended = softmax_attention(heads(mixer.q_proj(x)), heads(mixer.k_proj(x)), heads(mixer.v_proj(x)), causal=True)
    direct = mixer.out_proj(attended.transpose(1, 2).reshape(2, 16, 16))
    torch.testing.assert_close(out, direct, rtol=1e-5, atol=1e-6)
    direct.square().sum().backward()
    for got, want in zip(through, (mixer.q_proj.weight.grad, mixer.k_proj.weight.grad, mixer.v_proj.weight.grad),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-6)


class _FrozenScores(Variant):
    """A broken plugin: it computes its scores in prepare, so its forward ignores new inputs."""

    name = "frozen-scores"
    family = "test"
    computes = "softmax_attention"

    def prepare(self, case, inputs):
        weights = torch.softmax(inputs.q.detach() @ inputs.k.detach().transpose(-2, -1), dim=-1)
        return lambda: weights @ inputs.v


def test_a_variant_whose_forward_ignores_new_inputs_cannot_be_trained():
    mixer = VariantMixer(_FrozenScores(), _mixer_case(variant="frozen-scores"), d_model=16, layer=0)
    with pytest.raises(MixerError, match="does not read its inputs at call time"):
        mixer.bind()


def test_learning_rate_warms_up_then_decays_to_zero_and_the_curve_averages_windows():
    factors = [learning_rate_factor(s, 100) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False)) and factors[-1] < 0.01
    assert loss_curve([4.0, 2.0, 3.0, 1.0], points=2) == ((2, 3.0), (4, 2.0))


def test_model_parameter_count_matches_its_layers():
    case = _mixer_case(seq_len=32, heads=2, head_dim=8)
    model = RecallModel(REGISTRY.get("naive"), case, vocab=32, layers=2)
    d, vocab = 16, 32
    block = 2 * 2 * d + (3 * d + d) + 4 * d * d + (d * 2 * d + 2 * d + 2 * d * d + d)
    assert model.parameter_count == vocab * d + 2 * block + 2 * d + d * vocab


SMALLEST = dict(seq_len=32, batch=32, heads=2, head_dim=16, causal=True, mode="fwd_bwd",
                task="mqar:kv_pairs=2,vocab=32,steps=250,lr=0.01,test_examples=256")


def test_softmax_attention_learns_recall_on_a_small_mqar():
    """If this fails, the training is wrong (the task is easy for softmax attention): fix it, don't lower the bar."""
    case = Case(variant="sdpa-math", **SMALLEST)
    steps = []
    outcome = train_recall(REGISTRY.get("sdpa-math"), case, progress=lambda s, n, loss: steps.append((s, n)))
    assert outcome.accuracy >= 0.9, outcome
    assert outcome.steps == 250 and outcome.examples == 250 * 32 and steps[-1] == (250, 250)
    assert outcome.queries == 256 * 2 and outcome.loss_last < outcome.loss_first
    assert len(outcome.loss_curve) == 20 and outcome.loss_curve[-1][0] == 250
    assert outcome.state_size == 2 * 32 * (16 + 16)                     # its KV cache: kv_heads·N·(d + dv)
    again = train_recall(REGISTRY.get("sdpa-math"), case)
    assert again.accuracy == outcome.accuracy and again.loss_curve == outcome.loss_curve   # seeded


def test_quality_cells_report_unsupported_skipped_and_diverged_with_reasons():
    settings = MeasureSettings()

    class NoBackward(_FrozenScores):
        name = "no-backward"
        supports_backward = False

    case = Case(variant="no-backward", **SMALLEST)
    result = measure_case(case, NoBackward(), settings)
    assert result.status == "unsupported" and "no backward pass" in result.reason
    odd = Case(variant="naive", **{**SMALLEST, "seq_len": 31})
    result = measure_case(odd, REGISTRY.get("naive"), settings)
    assert result.status == "skipped" and "even seq_len" in result.reason and result.task is None
    hot = replace(Case(variant="naive", **SMALLEST), task="mqar:kv_pairs=2,vocab=32,steps=30,lr=1e6")
    result = measure_case(hot, REGISTRY.get("naive"), settings)
    assert result.status == "error" and "diverged" in result.reason and "lower the task's lr" in result.reason
    assert result.task is not None and result.task.steps >= 1

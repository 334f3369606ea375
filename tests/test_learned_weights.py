"""The learned-weights contract: seeded in kernel cells, parameters that train in quality cells.

The plugin below is written here and installed as a throw-away distribution,
so `attnbench quality` finds it through the entry point group as any plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from plugin_fixtures import write_distribution
from test_cli import attnbench, write

from attnbench import AttentionInputs, Case
from attnbench.core.learned import initial_weights
from attnbench.tasks.model import RecallModel
from attnbench.tasks.train import parameter_groups, train_recall

PLUGIN = '''
"""Softmax attention with a learned per-head log-temperature and output gain."""
import torch

from attnbench import LearnedWeight, Variant, attention_flops, constant, normal, softmax_attention


class LearnedScaleAttention(Variant):
    name = "learned-scale"
    family = "test-learned"
    computes = "scaled_softmax_attention"
    devices = ("cpu",)
    dtypes = ("float32", "float64")
    supports_cross = False

    def learned_weights(self, case):
        return {"log_scale": LearnedWeight((case.heads, 1, 1), normal(0.1), decay=False, doc="per-head log temperature"),
                "gain": LearnedWeight((case.heads, 1, 1), constant(1.0), doc="per-head output gain")}

    def prepare(self, case, inputs):
        q, k, v = inputs.tensors()
        w = self.weights(case, inputs)

        def forward():
            out = torch.nn.functional.scaled_dot_product_attention(q * torch.exp(w["log_scale"]), k, v,
                                                                   is_causal=case.causal)
            return out * w["gain"]
        return forward

    def reference(self, case, inputs, rows=None):
        q, k, v = inputs.tensors()
        w = self.weights(case, inputs)
        return softmax_attention(q * torch.exp(w["log_scale"]), k, v, causal=case.causal, rows=rows) * w["gain"]

    def flops(self, case):
        return attention_flops(case)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    site = write_distribution(tmp_path_factory.mktemp("site"), "attnbench-learned-scale", "attnbench_learned_scale",
                              PLUGIN, {"learned-scale": "attnbench_learned_scale:LearnedScaleAttention"})
    spec = importlib.util.spec_from_file_location("attnbench_learned_scale", site / "attnbench_learned_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return site, module.LearnedScaleAttention()


def _case(**changes) -> Case:
    base = dict(variant="learned-scale", batch=2, heads=2, seq_len=16, head_dim=8, dtype="float32", causal=True,
                mode="fwd_bwd", seed=3)
    return Case(**{**base, **changes})


def _inputs(case: Case, dtype=torch.float32) -> AttentionInputs:
    generator = torch.Generator().manual_seed(1)
    return AttentionInputs(*(torch.randn(case.batch, case.heads, case.seq_len, case.head_dim, generator=generator,
                                         dtype=dtype) for _ in range(3)))


def test_kernel_cells_seed_the_learned_weights_from_the_case(plugin):
    _, variant = plugin
    case = _case()
    first, again = variant.weights(case, _inputs(case)), variant.weights(case, _inputs(case))
    assert set(first) == {"log_scale", "gain"} and first["log_scale"].shape == (2, 1, 1)
    assert torch.equal(first["log_scale"], again["log_scale"]) and torch.equal(first["gain"], torch.ones(2, 1, 1))
    other = variant.weights(_case(seed=4), _inputs(case))["log_scale"]
    assert not torch.equal(first["log_scale"], other)
    # the reference sees the same values, upcast: N(0, 0.1²) drawn in float64, rounded through float32
    ref = variant.weights(case, _inputs(case, torch.float64))["log_scale"]
    assert ref.dtype == torch.float64 and torch.equal(ref, first["log_scale"].double())
    assert 0.0 < float(first["log_scale"].abs().max()) < 0.5


def test_prepare_matches_the_reference_and_the_trainers_weights_replace_the_seeded_ones(plugin):
    _, variant = plugin
    case = _case()
    inputs = _inputs(case)
    out = variant.prepare(case, inputs)()
    ref = variant.reference(case, AttentionInputs(*(t.double() for t in inputs.tensors())))
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-6
    given = {"log_scale": torch.zeros(2, 1, 1), "gain": torch.full((2, 1, 1), 2.0)}
    doubled = variant.prepare(case, AttentionInputs(*inputs.tensors(), weights=given))()
    plain = torch.nn.functional.scaled_dot_product_attention(*inputs.tensors(), is_causal=True)
    assert torch.allclose(doubled, 2.0 * plain, rtol=1e-6, atol=1e-6)


def test_a_wrong_weight_is_refused_with_the_variant_and_the_weight_named(plugin):
    _, variant = plugin
    case = _case()
    with pytest.raises(ValueError, match=r"'learned-scale'.*'gain'.*shape \(3,\)"):
        variant.weights(case, AttentionInputs(*_inputs(case).tensors(),
                                              weights={"log_scale": torch.zeros(2, 1, 1), "gain": torch.ones(3)}))
    with pytest.raises(ValueError, match=r"missing: \['gain'\]"):
        variant.weights(case, AttentionInputs(*_inputs(case).tensors(), weights={"log_scale": torch.zeros(2, 1, 1)}))


def test_the_model_trains_them_without_weight_decay_where_declared(plugin):
    _, variant = plugin
    case = _case(batch=8, task="mqar:kv_pairs=2,vocab=16,steps=30,test_examples=16,lr=0.01,layers=2")
    torch.manual_seed(0)
    model = RecallModel(variant, case, vocab=16, layers=2)
    decayed, exempt = parameter_groups(model)
    assert exempt["weight_decay"] == 0.0 and decayed["weight_decay"] > 0
    assert {id(p) for p in exempt["params"]} == {id(b.mixer.learned["log_scale"]) for b in model.blocks}
    # each layer starts from its own seed's draw (the layer offsets the case's seed)
    starts = [b.mixer.learned["log_scale"].detach() for b in model.blocks]
    assert not torch.equal(starts[0], starts[1])
    assert torch.equal(starts[0], initial_weights("learned-scale", model.blocks[0].mixer.case,
                                                  variant.learned_weights(case), torch.float32)["log_scale"])
    outcome = train_recall(variant, case)
    changes = dict(outcome.weight_change)
    assert set(changes) == {"log_scale", "gain"} and all(change > 1e-3 for change in changes.values())
    assert [seen for seen, _ in outcome.recall_curve] == [3 * 8 * i for i in range(1, 10)] + [30 * 8]
    assert outcome.recall_curve[-1][1] == outcome.accuracy


def test_a_plugin_with_learned_weights_trains_through_attnbench_quality(plugin, tmp_path, calibration_cache):
    site, _ = plugin
    suite = write(tmp_path, "learned.toml", """
[suite]
name = "learned"
variants = ["learned-scale"]

[defaults]
batch = 8
heads = 2
head_dim = 8
causal = true
mode = "fwd_bwd"
seq_len = 16

[task]
kind = "mqar"
kv_pairs = 2
vocab = 16
steps = 40
test_examples = 16
costs = false
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
           "ATTNBENCH_RESULTS": str(tmp_path / "results"), "ATTNBENCH_CACHE_DIR": str(calibration_cache)}
    attnbench("quality", str(suite), "--no-report", env=env, check=0)
    cells = [json.loads(line) for line in next(Path(tmp_path / "results").iterdir()).joinpath("cells.jsonl")
             .read_text().splitlines()]
    assert len(cells) == 1 and cells[0]["result"]["status"] == "ok", cells
    task = cells[0]["result"]["task"]
    changes = dict(task["weight_change"])
    assert set(changes) == {"log_scale", "gain"} and min(changes.values()) > 1e-3, changes
    assert len(task["recall_curve"]) == 10 and task["recall_curve"][-1][0] == 40 * 8


def _task_suite(tmp_path, variants: list[str], task: str, *, causal: bool = True):
    """A small MQAR suite of `variants` whose [task] ends with the lines `task`: its text and the loaded suite."""
    from attnbench.plan.suite import load_suite

    text = (f'[suite]\nname = "s"\nvariants = {json.dumps(variants)}\n[defaults]\nseq_len = 16\nbatch = 4\n'
            f'mode = "fwd_bwd"\ncausal = {str(causal).lower()}\n[task]\nkind = "mqar"\nkv_pairs = 2\nvocab = 16\n'
            + task)
    return text, load_suite(str(write(tmp_path, "s.toml", text)))


def _refused(tmp_path, text: str, edit: tuple[str, str], match: str) -> None:
    """The suite `text` with `edit` (old, new) applied is refused with a message matching `match`."""
    from attnbench.plan.suite import SuiteError, load_suite

    with pytest.raises(SuiteError, match=match):
        load_suite(str(write(tmp_path, "bad.toml", text.replace(*edit))))


def _trained(suite, option: str) -> dict[str, list]:
    """`option` (lr, steps) of each quality cell of `suite`, per variant in expansion order."""
    from attnbench.core.registry import default_registry
    from attnbench.core.taskspec import parse_task
    from attnbench.plan.suite import expand

    values: dict[str, list] = {}
    for case in expand(suite, default_registry()):
        if case.task != "none":
            values.setdefault(case.variant, []).append(getattr(parse_task(case.task), option))
    return values


def test_a_suite_sweeps_the_learning_rate_one_quality_cell_each(tmp_path):
    from attnbench.core.registry import default_registry
    from attnbench.plan.suite import expand

    text, suite = _task_suite(tmp_path, ["sdpa-math"], "lr = [0.001, 0.01]\n", causal=False)
    assert _trained(suite, "lr") == {"sdpa-math": [0.001, 0.01]}
    assert sum(c.task == "none" for c in expand(suite, default_registry())) == 1   # one kernel cell for the shared shape
    _refused(tmp_path, text, ("[0.001, 0.01]", '[0.001, "fast"]'), r"task\.lr.*non-empty list")


def test_a_variants_own_learning_rate_replaces_the_suites_for_its_cells_only(tmp_path):
    from attnbench.plan.suite import with_overrides

    text, loaded = _task_suite(tmp_path, ["sdpa-math", "deltanet"], "lr = 0.01\n[task.lr_for]\ndeltanet = [0.003, 0.001]\n")
    shorter = with_overrides(loaded, steps=7)
    for suite in (loaded, shorter):
        assert _trained(suite, "lr") == {"sdpa-math": [0.01], "deltanet": [0.003, 0.001]}
    assert _trained(shorter, "steps") == {"sdpa-math": [7], "deltanet": [7, 7]}
    _refused(tmp_path, text, ("deltanet = [", "linear = ["), r"task\.lr_for\.linear.*does not list")
    _refused(tmp_path, text, ("[0.003, 0.001]", "-1"), r"task\.lr_for\.deltanet.*positive number")


def test_a_variants_own_step_budget_replaces_the_tasks_for_its_cells_until_steps_is_given(tmp_path):
    from attnbench.plan.suite import with_overrides

    text, loaded = _task_suite(tmp_path, ["sdpa-math", "mamba2-ssd"], "steps = 40\nlr = 0.01\n[task.lr_for]\n"
                               "mamba2-ssd = 0.003\n[task.steps_for]\nmamba2-ssd = 90\n")
    for suite, steps in ((loaded, {"sdpa-math": [40], "mamba2-ssd": [90]}),
                         (with_overrides(loaded, steps=7), {"sdpa-math": [7], "mamba2-ssd": [7]})):
        assert _trained(suite, "steps") == steps
        assert _trained(suite, "lr") == {"sdpa-math": [0.01], "mamba2-ssd": [0.003]}
    _refused(tmp_path, text, ("mamba2-ssd = 90", "linear = 90"), r"task\.steps_for\.linear.*does not list")
    for bad in ("0", "2.5", '"many"'):
        _refused(tmp_path, text, ("mamba2-ssd = 90", f"mamba2-ssd = {bad}"),
                 r"task\.steps_for\.mamba2-ssd.*positive whole number")


def test_the_report_keeps_the_best_learning_rate_and_averages_curves():
    import pandas as pd

    from attnbench.core.taskspec import parse_task
    from attnbench.store.quality import best_over_learning_rates, mean_curve

    task = "mqar:kv_pairs=8,vocab=128"
    rows = pd.DataFrame([{"variant": v, "task": parse_task(task, lr=lr).text, "lr": lr, "recall": r}
                         for v, lr, r in [("a", 1e-3, 0.4), ("a", 3e-3, 0.9), ("a", 1e-2, 0.2), ("b", 1e-2, 0.5)]])
    best = best_over_learning_rates(rows).set_index("variant")
    assert best.loc["a", "lr"] == 3e-3 and best.loc["a", "recall"] == 0.9 and best.loc["a", "lrs"] == "0.001, 0.003, 0.01"
    assert best.loc["b", "lrs"] == "0.01" and len(best) == 2
    curve = json.loads(mean_curve(pd.Series(["[[32, 0.2], [64, 0.4]]", "[[32, 0.4], [64, 0.8]]"])))
    assert [x for x, _ in curve] == [32, 64] and [y for _, y in curve] == pytest.approx([0.3, 0.6])
    assert parse_task(task).chance_recall == 1 / 64

"""Train a `RecallModel` on MQAR for a fixed step budget and measure recall on a held-out set.

A plain loop: one fresh seeded batch per step, AdamW (β = 0.9, 0.98, weight
decay 0.1, none on the learned weights a variant declares with decay=False:
decay rates, A, skip gains), a linear warm-up over the first tenth of the
steps then cosine decay to zero, gradients clipped at norm 1. The loss is
cross-entropy at the query positions only. Held-out recall is measured
`RECALL_POINTS` times along the way (on the first `CURVE_EXAMPLES` held-out
examples) and at the end (on all of them): the learning curve. Seeds: the case's `seed` fixes the initialisation
(torch.manual_seed), the training stream (seed·2 + 1) and the held-out set
(seed·2 + 2), so two cells with the same seed train on the same data and are
tested on the same examples, whatever their variant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.core.case import Case
from attnbench.core.result import TaskOutcome
from attnbench.core.taskspec import TaskSpec, parse_task
from attnbench.core.variant import Variant
from attnbench.tasks.model import RecallModel
from attnbench.tasks.mqar import IGNORE, RecallBatch, recall_batch

CURVE_POINTS = 20
RECALL_POINTS = 10
CURVE_EXAMPLES = 256
WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `outcome` holds what was measured up to then."""

    def __init__(self, message: str, outcome: TaskOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class TrainingPlan:
    """What one quality cell trains: the case (variant, shapes, seed) and its task settings."""

    case: Case
    spec: TaskSpec

    @classmethod
    def of(cls, case: Case) -> TrainingPlan:
        return cls(case=case, spec=parse_task(case.task))


def learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first tenth of the steps, then cosine decay to zero."""
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def recall_loss(model: RecallModel, batch: RecallBatch) -> torch.Tensor:
    """Mean cross-entropy of the values at the query positions."""
    queries = batch.labels != IGNORE                                                 # (B, N)
    logits = model(batch.inputs, queries)                                            # (P, vocab)
    return torch.nn.functional.cross_entropy(logits, batch.labels[queries])


def recall_accuracy(model: RecallModel, test: RecallBatch, batch_size: int) -> tuple[float, int]:
    """(share of held-out queries whose most likely next token is their value, queries counted)."""
    correct = total = 0
    model.eval()
    try:
        for start in range(0, test.inputs.shape[0], batch_size):
            inputs, labels = test.inputs[start:start + batch_size], test.labels[start:start + batch_size]
            queries = labels != IGNORE                                              # (B, N)
            with torch.no_grad():
                predicted = model(inputs, queries).argmax(dim=-1)                   # (P,)
            correct += int((predicted == labels[queries]).sum())
            total += int(queries.sum())
    finally:
        model.train()
    return (correct / total if total else float("nan")), total


def train_recall(variant: Variant, case: Case, progress: Callable[[int, int, float], None] | None = None) -> TaskOutcome:
    """Train and evaluate one quality cell; `progress(step, steps, loss)` is called every few steps.

    Raises TrainingDiverged when the loss stops being finite, ValueError for
    a case MQAR cannot be built on.
    """
    spec = parse_task(case.task)
    device = torch.device(case.device)
    setup_start = time.perf_counter()
    torch.manual_seed(case.seed)
    model = RecallModel(variant, case, spec.vocab, spec.layers).to(device)
    model.bind()
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=spec.lr, betas=(0.9, 0.98))
    start_weights = learned_weights(model)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, spec.steps))
    train_stream = torch.Generator().manual_seed(case.seed * 2 + 1)
    test_examples = -(-spec.test_examples // case.batch) * case.batch
    test = _to(recall_batch(test_examples, case.seq_len, spec.kv_pairs, spec.vocab,
                            torch.Generator().manual_seed(case.seed * 2 + 2), spec.power_a), device)
    curve_test = RecallBatch(inputs=test.inputs[:CURVE_EXAMPLES], labels=test.labels[:CURVE_EXAMPLES])
    setup_s = time.perf_counter() - setup_start

    losses: list[float] = []
    recall_curve: list[tuple[int, float]] = []
    eval_s = 0.0
    train_start = time.perf_counter()
    every = max(1, spec.steps // 100)
    curve_every = max(1, spec.steps // RECALL_POINTS)
    for step in range(spec.steps):
        batch = _to(recall_batch(case.batch, case.seq_len, spec.kv_pairs, spec.vocab, train_stream, spec.power_a),
                    device)
        loss = recall_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value):
            outcome = _outcome(spec, model, losses, float("nan"), 0, setup_s, time.perf_counter() - train_start, 0.0,
                               variant, case, recall_curve, start_weights)
            raise TrainingDiverged(f"training diverged at step {step + 1} of {spec.steps} (loss {value}); "
                                   f"lower the task's lr (now {spec.lr:g})", outcome)
        if progress is not None and (step % every == 0 or step == spec.steps - 1):
            progress(step + 1, spec.steps, value)
        if (step + 1) % curve_every == 0 and step + 1 < spec.steps:
            eval_start = time.perf_counter()
            recall_curve.append(((step + 1) * case.batch, recall_accuracy(model, curve_test, case.batch)[0]))
            eval_s += time.perf_counter() - eval_start
    eval_start = time.perf_counter()
    accuracy, queries = recall_accuracy(model, test, case.batch)
    eval_s += time.perf_counter() - eval_start
    recall_curve.append((spec.steps * case.batch, accuracy))
    train_s = time.perf_counter() - train_start - eval_s
    return _outcome(spec, model, losses, accuracy, queries, setup_s, train_s, eval_s, variant, case, recall_curve,
                    start_weights)


def parameter_groups(model: RecallModel) -> list[dict]:
    """AdamW's groups: weight decay on every parameter but the learned weights declared decay=False."""
    exempt = {id(block.mixer.learned[name]) for block in model.blocks for name in block.mixer.no_decay}
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) not in exempt], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0}]


def learned_weights(model: RecallModel) -> dict[str, list[torch.Tensor]]:
    """A detached copy of each learned weight of the variant, name -> one tensor per layer."""
    names = model.blocks[0].mixer.learned.keys() if len(model.blocks) else ()
    return {name: [block.mixer.learned[name].detach().clone() for block in model.blocks] for name in names}


def weight_change(start: dict[str, list[torch.Tensor]], model: RecallModel) -> tuple[tuple[str, float], ...]:
    """Per learned weight, ‖w_end − w_start‖ / ‖w_start‖ over all layers (the change itself where w_start is 0)."""
    end = learned_weights(model)
    changes = []
    for name, before in start.items():
        moved = math.sqrt(sum(float((b - a).double().pow(2).sum()) for a, b in zip(before, end[name], strict=True)))
        scale = math.sqrt(sum(float(a.double().pow(2).sum()) for a in before))
        changes.append((name, moved / scale if scale > 0 else moved))
    return tuple(changes)


def loss_curve(losses: list[float], points: int = CURVE_POINTS) -> tuple[tuple[int, float], ...]:
    """(step, mean loss of the window of steps ending there) at `points` evenly spaced steps."""
    if not losses:
        return ()
    edges = sorted({max(1, round(len(losses) * (i + 1) / points)) for i in range(points)})
    curve, start = [], 0
    for end in edges:
        window = losses[start:end] or losses[end - 1:end]
        curve.append((end, sum(window) / len(window)))
        start = end
    return tuple(curve)


def _outcome(spec, model, losses, accuracy, queries, setup_s, train_s, eval_s, variant, case, recall_curve,
             start_weights) -> TaskOutcome:
    tail = max(1, len(losses) // 20)
    state = variant.state_size(case)
    return TaskOutcome(task=spec.kind, accuracy=accuracy, queries=queries,
                       loss_first=_mean(losses[:tail]), loss_last=_mean(losses[-tail:]),
                       loss_min=min(losses) if losses else float("nan"), loss_curve=loss_curve(losses),
                       steps=len(losses), train_s=train_s, eval_s=eval_s, setup_s=setup_s,
                       parameters=model.parameter_count, examples=len(losses) * case.batch,
                       state_size=state, recall_curve=tuple(recall_curve),
                       weight_change=weight_change(start_weights, model))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _to(batch: RecallBatch, device: torch.device) -> RecallBatch:
    return RecallBatch(inputs=batch.inputs.to(device), labels=batch.labels.to(device))

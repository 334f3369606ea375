"""Train a `RecallModel` on MQAR for a fixed step budget and measure recall on a held-out set.

A plain loop: one fresh seeded batch per step, AdamW (β = 0.9, 0.98, weight
decay 0.1), a linear warm-up over the first tenth of the steps then cosine
decay to zero, gradients clipped at norm 1. The loss is cross-entropy at the
query positions only. Seeds: the case's `seed` fixes the initialisation
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
WARMUP_FRACTION = 0.1


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, spec.steps))
    train_stream = torch.Generator().manual_seed(case.seed * 2 + 1)
    test_examples = -(-spec.test_examples // case.batch) * case.batch
    test = _to(recall_batch(test_examples, case.seq_len, spec.kv_pairs, spec.vocab,
                            torch.Generator().manual_seed(case.seed * 2 + 2), spec.power_a), device)
    setup_s = time.perf_counter() - setup_start

    losses: list[float] = []
    train_start = time.perf_counter()
    every = max(1, spec.steps // 100)
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
                               variant, case)
            raise TrainingDiverged(f"training diverged at step {step + 1} of {spec.steps} (loss {value}); "
                                   f"lower the task's lr (now {spec.lr:g})", outcome)
        if progress is not None and (step % every == 0 or step == spec.steps - 1):
            progress(step + 1, spec.steps, value)
    train_s = time.perf_counter() - train_start
    eval_start = time.perf_counter()
    accuracy, queries = recall_accuracy(model, test, case.batch)
    return _outcome(spec, model, losses, accuracy, queries, setup_s, train_s, time.perf_counter() - eval_start,
                    variant, case)


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


def _outcome(spec, model, losses, accuracy, queries, setup_s, train_s, eval_s, variant, case) -> TaskOutcome:
    tail = max(1, len(losses) // 20)
    state = variant.state_size(case)
    return TaskOutcome(task=spec.kind, accuracy=accuracy, queries=queries,
                       loss_first=_mean(losses[:tail]), loss_last=_mean(losses[-tail:]),
                       loss_min=min(losses) if losses else float("nan"), loss_curve=loss_curve(losses),
                       steps=len(losses), train_s=train_s, eval_s=eval_s, setup_s=setup_s,
                       parameters=model.parameter_count, examples=len(losses) * case.batch,
                       state_size=state)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _to(batch: RecallBatch, device: torch.device) -> RecallBatch:
    return RecallBatch(inputs=batch.inputs.to(device), labels=batch.labels.to(device))

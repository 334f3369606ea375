"""The `task` axis of a case as text: ``none`` (a kernel cell) or ``mqar:...`` (a trained quality cell).

Pure Python (no torch). A quality cell trains a small model whose sequence
mixer is the case's variant on the case's shapes (`attnbench.tasks`): batch is
the training batch, heads·head_dim the model width, seq_len the sequence.
The task's own settings are written out in full in the canonical text,
``mqar:kv_pairs=4,layers=2,lr=0.01,steps=600,test_examples=512,vocab=128``,
so a case's id says exactly what was trained even after a default changes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from attnbench.core.kindtext import split_kind

TASK_KINDS = ("none", "mqar")


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task: its kind and, for ``mqar``, the recall problem and the training budget.

    kv_pairs: key-value pairs per example (Zoology's D); vocab: tokens (keys
    from the lower half, values from the upper); layers: blocks of the model;
    steps: AdamW steps (one fresh seeded batch each); lr: peak learning rate
    (linear warm-up over the first tenth, cosine decay to zero); test_examples:
    the held-out examples recall is measured on; power_a: the power law of
    the query gaps (Zoology's 0.01).
    """

    kind: str = "none"
    kv_pairs: int = 4
    vocab: int = 128
    layers: int = 2
    steps: int = 600
    lr: float = 1e-2
    test_examples: int = 512
    power_a: float = 0.01

    @property
    def text(self) -> str:
        if self.kind == "none":
            return "none"
        options = ",".join(f"{name}={_number_text(getattr(self, name))}" for name in OPTION_NAMES)
        return f"{self.kind}:{options}"

    @property
    def short(self) -> str:
        """A label for tables: 'mqar kv4' (the settings a reader compares cells by)."""
        return "none" if self.kind == "none" else f"{self.kind} kv{self.kv_pairs}"

    @property
    def chance_recall(self) -> float:
        """Recall of a guess among the values (the vocabulary's upper half): the floor a mixer that recalls nothing sits on."""
        return 1.0 / (self.vocab - self.vocab // 2) if self.kind == "mqar" else float("nan")

    def with_options(self, **options: Any) -> TaskSpec:
        """The same task with some options replaced (``--steps``), checked as the text's are."""
        return parse_task(self.text, **options)


OPTION_NAMES = tuple(sorted(f.name for f in fields(TaskSpec) if f.name != "kind"))
_TYPES = {f.name: type(f.default) for f in fields(TaskSpec)}
TASK_HELP = ("none, or mqar with options kv_pairs, vocab, layers, steps, lr, test_examples, power_a "
             "(e.g. 'mqar' or 'mqar:kv_pairs=8,steps=1000')")


def parse_task(text: str, **options: Any) -> TaskSpec:
    """'mqar:kv_pairs=8' -> TaskSpec('mqar', kv_pairs=8, ...); keyword options replace the text's. ValueError names the option."""
    split = split_kind(text, "task", TASK_KINDS, TASK_HELP)
    if split.kind == "none":
        if options:
            raise ValueError(f"task 'none' takes no options, got {text!r}")
        split.bare()
        return TaskSpec()
    if split.arg:
        raise split.error(f"option {split.arg!r} must be name=value")
    given: dict[str, Any] = dict(split.options)
    kind = split.kind
    given.update(options)
    values = {name: _option(text, name, value) for name, value in given.items()}
    spec = replace(TaskSpec(kind=kind), **values)
    if not 0 < spec.power_a <= 1:
        raise ValueError(f"task {text!r}: power_a must be in (0, 1] (1 is uniform), got {spec.power_a}")
    if spec.vocab < 4:
        raise ValueError(f"task {text!r}: vocab must be at least 4, got {spec.vocab}")
    return spec


def _option(text: str, name: str, value: Any) -> Any:
    if name not in OPTION_NAMES:
        raise ValueError(f"task {text!r}: unknown option {name!r}; options: {', '.join(OPTION_NAMES)}")
    expected = _TYPES[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = expected(value) if not isinstance(value, str) else (int(value) if expected is int else float(value))
        if expected is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"task {text!r}: option {name} must be {'an integer' if expected is int else 'a number'}, "
                         f"got {value!r}") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"task {text!r}: option {name} must be positive, got {value!r}")
    return number


def _number_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)

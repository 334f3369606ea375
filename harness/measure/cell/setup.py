"""The setup stage of a timed cell: seeded inputs, the variant's `prepare`, one untimed call.

`Step` is the callable every later stage runs (timing, memory, accuracy and
`attnbench profile` alike): the forward, plus the backward of its output in
``fwd_bwd`` mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.core.case import Case
from attnbench.core.variant import AttentionInputs, Variant
from attnbench.measure.inputs import make_inputs, make_output_grad
from attnbench.measure.setup_parts import SetupClock, SetupParts, warm_compile_stack


class Step:
    """The timed callable: the forward, plus the backward of its output in fwd_bwd mode."""

    def __init__(self, case: Case, inputs: AttentionInputs, forward: Callable[[], torch.Tensor]) -> None:
        self.case = case
        self.inputs = inputs
        self.forward = forward
        self.grad_output: torch.Tensor | None = None

    def __call__(self):
        if self.case.mode == "fwd":
            with torch.inference_mode():
                return self.forward()
        out = self.forward()
        if self.grad_output is None:
            self.grad_output = make_output_grad(self.case, out)
        return torch.autograd.grad(out, self.inputs.tensors(), self.grad_output)

    def forward_only(self):
        if self.case.mode == "fwd":
            with torch.inference_mode():
                return self.forward()
        return self.forward()


@dataclass(frozen=True)
class Prepared:
    """What setup hands the later stages: the step, the seconds `prepare` plus the first call took, and those
    seconds in parts (compile, the rest of prepare, the first call)."""

    step: Step
    setup_s: float
    setup_parts: SetupParts | None = None
    compile_warmup_s: float = 0.0


def sync_for(case: Case) -> Callable[[], None]:
    """What waits for the device's queued work: `torch.cuda.synchronize` on CUDA, nothing on the CPU."""
    if case.device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def prepare_step(case: Case, variant: Variant) -> Prepared:
    """Seeded inputs, `variant.prepare`, and one call (compile, autotune, lazy allocation) outside the timing.

    A variant that compiles for the case (`compiles_for`) first gets torch.compile's per-process start (`warm_compile_stack`), outside
    its setup clock: a worker pays it once, and only the first such cell in the worker reports it."""
    warmup_s = warm_compile_stack() if variant.compiles_for(case) else 0.0
    torch.manual_seed(case.seed)
    inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
    sync = sync_for(case)
    setup_start, clock = time.perf_counter(), SetupClock()
    forward = variant.prepare(case, inputs)
    clock.prepared()
    step = Step(case, inputs, forward)
    step()
    sync()
    return Prepared(step, time.perf_counter() - setup_start, clock.parts(), warmup_s)

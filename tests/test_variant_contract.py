"""Every registered variant honours the contract: metadata, reasons instead of exceptions, and accuracy.

The grid is built from each variant's own metadata (its dtypes, causal
support, knobs), as xformers builds its operator tests.
"""

from __future__ import annotations

import pytest
import torch

from attnbench.core.case import DTYPES, Case
from attnbench.core.registry import default_registry
from attnbench.measure.accuracy import error_metrics, judge
from attnbench.measure.inputs import make_inputs, make_output_grad, upcast

REGISTRY = default_registry()
SMALL = dict(batch=1, heads=2, seq_len=96, head_dim=16)


def grid():
    for name in REGISTRY.names():
        variant = REGISTRY.get(name)
        for dtype in ("float32", "bfloat16"):
            for causal in (False, True):
                for mode in ("fwd", "fwd_bwd"):
                    case = Case(variant=name, dtype=dtype, causal=causal, mode=mode, params=dict(variant.params),
                                **SMALL)
                    if variant.supports(case):
                        yield pytest.param(case, id=case.label.split("-B")[0])


def test_every_entry_point_loaded():
    assert not REGISTRY.failures, [f"{f.entry_point}: {f.error}" for f in REGISTRY.failures]


@pytest.mark.parametrize("name", REGISTRY.names())
def test_metadata_and_reasons_never_raise(name):
    variant = REGISTRY.get(name)
    assert variant.name == name and variant.family and variant.computes
    assert set(variant.dtypes) <= set(DTYPES)
    for device in ("cpu", "cuda"):
        for dtype in DTYPES:
            for mode in ("fwd", "fwd_bwd"):
                case = Case(variant=name, device=device, dtype=dtype, mode=mode, causal=True,
                            params=dict(variant.params), **SMALL)
                reasons = variant.unsupported_reasons(case)
                assert isinstance(reasons, list) and all(isinstance(r, str) and r for r in reasons)
    if not torch.cuda.is_available():
        reasons = variant.unsupported_reasons(variant.probe_case("cuda"))
        assert reasons, f"{name} claims it can run on CUDA without a device"
    case = Case(variant=name, params=dict(variant.params), **SMALL)
    assert variant.flops(case) > 0
    memory = variant.memory_model(case)
    assert memory is None or memory >= 0


@pytest.mark.parametrize("case", list(grid()))
def test_output_and_gradients_match_the_float64_reference(case):
    """Judged exactly as a stored cell is: against the variant's own declared tolerance for the dtype."""
    variant = REGISTRY.get(case.variant)
    inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
    forward = variant.prepare(case, inputs)
    with torch.inference_mode(case.mode == "fwd"):
        out = forward()
    inputs64 = upcast(inputs, requires_grad=case.mode == "fwd_bwd")
    reference = variant.reference(case, inputs64)
    gradients = {}
    if case.mode == "fwd_bwd":
        grad = make_output_grad(case, out)
        grads = torch.autograd.grad(out, inputs.tensors(), grad, allow_unused=True)
        ref_grads = torch.autograd.grad(reference, inputs64.tensors(), grad.double(), allow_unused=True)
        for label, got, want in zip("qkv", grads, ref_grads, strict=True):
            if got is None or want is None:
                assert got is None and (want is None or float(want.abs().max()) == 0), label
                continue
            gradients[label] = error_metrics(got, want)
    bound = variant.tolerance(case)
    assert bound is not None, f"{case.variant} declares no {case.dtype} tolerance, so its cells would go unjudged"
    ok, _, failures = judge(error_metrics(out, reference), gradients, bound, dtype=case.dtype, variant=case.variant)
    worst = (out.detach().double() - reference.detach()).abs().argmax()
    assert ok, f"{'; '.join(failures)}; worst output flat index {int(worst)}"

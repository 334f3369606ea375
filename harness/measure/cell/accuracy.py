"""The accuracy stage of a timed cell: the output against the float64 reference of the same function.

A ragged batch (`lengths`, `layout`) compares its real rows only with the
reference computed on each sequence alone (`attnbench.attention.ragged`).
At large N the reference is evaluated on a seeded sample of query rows
(`MeasureSettings.accuracy_max_pairs`, `accuracy_rows`); an approximation is
also compared with exact softmax attention, and its weights' fidelity is
measured (`attnbench.measure.fidelity`).
"""

from __future__ import annotations

import torch

from attnbench.attention.ragged import ragged_reference, real_rows
from attnbench.attention.reference import case_softmax_attention
from attnbench.core.case import Case
from attnbench.core.failures import describe_exception
from attnbench.core.result import Accuracy
from attnbench.core.settings import MeasureSettings
from attnbench.core.variant import AttentionInputs, Variant
from attnbench.kinds.lengths.batch import is_ragged
from attnbench.measure.accuracy import error_metrics, judge
from attnbench.measure.cell.setup import Step
from attnbench.measure.fidelity import fidelity_rows, measure_fidelity, takes_rows
from attnbench.measure.inputs import make_output_grad, upcast


def _sample_rows(case: Case, settings: MeasureSettings, variant: Variant) -> torch.Tensor | None:
    if is_ragged(case):
        return None                                       # a ragged batch is checked sequence by sequence, whole
    if case.seq_len * case.kv_len <= settings.accuracy_max_pairs or not variant.reference_rows:
        return None
    generator = torch.Generator().manual_seed(case.seed + 7)
    count = min(settings.accuracy_rows, case.seq_len)
    return torch.randperm(case.seq_len, generator=generator)[:count].sort().values


def measure_accuracy(case: Case, variant: Variant, step: Step,
                     settings: MeasureSettings) -> tuple[Accuracy, tuple[str, ...]]:
    """The output (and gradients) against the float64 reference, an approximation's error against exact
    softmax and its weights' fidelity, judged against the variant's tolerance; with the stage's warnings."""
    warnings: list[str] = []
    rows = _sample_rows(case, settings, variant)
    with_grads = case.mode == "fwd_bwd" and rows is None
    out = step.forward_only()
    again = step.forward_only()
    if out.shape == again.shape:
        same = torch.isclose(out, again, rtol=0.0, atol=0.0, equal_nan=True)      # NaN where NaN is not a difference
        if not bool(same.all()):
            differ = (out.detach().double() - again.detach().double()).abs()[~same]
            spread = float(differ.nan_to_num(nan=float("inf")).max())
            warnings.append(f"non-deterministic: two calls on the same inputs differ by up to {spread:.3g}")
    del again
    inputs64 = upcast(step.inputs, requires_grad=with_grads)
    if is_ragged(case):                                   # the real rows against each sequence's own reference
        out = real_rows(out.detach(), case)               # (1, H, Σq, d_v)
        reference = ragged_reference(case, variant, *inputs64.tensors())
    else:
        reference = variant.reference(case, inputs64, rows=rows)
    expected = reference if rows is None else None
    if out.shape[-2] == case.seq_len and rows is not None:
        out_rows = out.detach()[..., rows.to(out.device), :]
    else:
        out_rows = out.detach()
    if expected is None:
        expected = reference
    output_metrics = error_metrics(out_rows, expected)

    gradients = {}
    if with_grads:
        grad_out = make_output_grad(case, out)
        grads = torch.autograd.grad(out, step.inputs.tensors(), grad_out, allow_unused=True)
        ref_grads = torch.autograd.grad(reference, inputs64.tensors(), grad_out.detach().to("cpu", torch.float64),
                                        allow_unused=True)
        for name, got, want in zip("qkv", grads, ref_grads, strict=True):
            if got is not None and want is not None:
                gradients[name] = error_metrics(got, want)

    approx = fidelity = None
    fidelity_note = ""
    if variant.approximation(case) == "softmax_attention":
        q, k, v = (t.detach() for t in inputs64.tensors())
        exact = case_softmax_attention(case, q, k, v, rows=rows)
        approx = error_metrics(out_rows, exact)
        fidelity, fidelity_note = _measure_fidelity(case, variant, inputs64, rows, warnings)
    note = "" if rows is None else f"reference evaluated on {len(rows)} seeded query rows"
    note = "; ".join(filter(None, (note, fidelity_note)))
    if case.mode == "fwd_bwd" and rows is not None:
        note += "; gradients not checked at this size"
    # Judged against the variant's own function (an approximation's `approx` error is reported, never judged).
    bound = variant.tolerance(case)
    ok, tolerance, failures = judge(output_metrics, gradients, bound, dtype=case.dtype, variant=variant.name)
    if bound is None:
        note = "; ".join(filter(None, (note, f"{variant.name} declares no {case.dtype} tolerance: not judged")))
    accuracy = Accuracy(output=output_metrics, gradients=gradients, approx=approx, fidelity=fidelity,
                        rows_checked=None if rows is None else len(rows), note=note,
                        ok=ok, tolerance=tolerance, failures=failures)
    return accuracy, tuple(warnings)


def _measure_fidelity(case: Case, variant: Variant, inputs64: AttentionInputs, rows: torch.Tensor | None,
                      warnings: list[str]) -> tuple[dict | None, str]:
    """The weights' fidelity to exact softmax (`attnbench.measure.fidelity`) on the accuracy check's rows.

    (fidelity or None, a note). None when the variant gives no weights; a failure is a warning,
    never a failed cell. A variant whose `attention_weights` takes no ``rows=`` is only asked at
    sizes where every row is checked (it would form the whole (N, M) matrix).
    """
    try:
        if rows is not None and not takes_rows(variant):
            return None, f"weight fidelity not computed: {variant.name}'s attention_weights takes no rows="
        detached = AttentionInputs(*(t.detach() for t in inputs64.tensors()))
        return measure_fidelity(case, variant, detached, fidelity_rows(case.seq_len, rows)), ""
    except Exception as exc:
        warnings.append(f"weight fidelity not computed: {describe_exception(exc)}")
        return None, ""

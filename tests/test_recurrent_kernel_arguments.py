"""What flash-linear-attention's and mamba_ssm's kernels are asked, checked on the CPU.

The kernels need CUDA (fla's Triton kernels do not run under Triton's CPU
interpreter here: "0 active drivers"). Each argument mapping is a pure
function; below, each kernel's documented semantics is written out as a plain
float64 loop in the kernel's own layout ((B, T, H, ·) for fla and
mamba_chunk_scan_combined, (B, D, L) for selective_scan_fn), fed the mapped
arguments, and must give our variant's float64 reference. The kernel runs
themselves are marked `cuda`.
"""

from __future__ import annotations

import pytest
import torch
from tiny_suites import measure_accurate

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs
from attnbench.variants.deltanet import delta_rule_fla_arguments
from attnbench.variants.mamba import (
    chunk_scan_arguments,
    selective_inputs,
    selective_scan_arguments,
    ssd_inputs,
)
from attnbench.variants.retention import gla_fla_arguments, retention_fla_arguments

REGISTRY = default_registry()


def fla_semantics(q, k, v, scale, g=None, beta=None, decay="none"):
    """fla's chunk kernels as recurrences in (B, T, H, K): h (B, H, K, V); decay 'retention' (γ_h from the head
    count), 'gla' (g per key channel), 'scalar' (g per head) or 'none'; beta turns on the delta rule."""
    batch, steps, heads, key_dim = q.shape
    h = q.new_zeros(batch, heads, key_dim, v.shape[-1])
    gammas = 1 - 2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float64))
    out = []
    for t in range(steps):
        if decay == "retention":
            h = h * gammas[:, None, None]
        elif decay == "gla":
            h = h * g[:, t].exp()[..., None]
        elif decay == "scalar":
            h = h * g[:, t].exp()[..., None, None]
        k_t, v_t = k[:, t], v[:, t]                                       # (B, H, K), (B, H, V)
        if beta is not None:
            v_t = beta[:, t, :, None] * (v_t - torch.einsum("bhk,bhkv->bhv", k_t, h))
        h = h + k_t[..., None] * v_t[..., None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, h))
    return torch.stack(out, dim=1)                                        # (B, T, H, V)


@pytest.mark.parametrize("name", ["retnet", "gla", "deltanet", "gated-deltanet"])
def test_fla_arguments_give_our_reference(name):
    variant = REGISTRY.get(name)
    case = Case(variant=name, batch=2, heads=3, seq_len=40, head_dim=8, dtype="float64", causal=True,
                params=dict(variant.params))
    inputs = make_inputs(case)
    q, k, v = inputs.tensors()
    weights = variant.mixer_weights(case, inputs, torch.float64)
    if name == "retnet":
        arguments, decay = retention_fla_arguments(q, k, v, weights), "retention"
    elif name == "gla":
        arguments, decay = gla_fla_arguments(q, k, v, weights), "gla"
    else:
        arguments = delta_rule_fla_arguments(q, k, v, weights, gated=name == "gated-deltanet")
        decay = "scalar" if name == "gated-deltanet" else "none"
    assert arguments["q"].shape == (2, 40, 3, 8) and arguments["q"].data_ptr() == q.data_ptr() or name in (
        "deltanet", "gated-deltanet")                                     # a view, except after normalising
    out = fla_semantics(**arguments, decay=decay).transpose(1, 2)         # (B, H, N, V)
    torch.testing.assert_close(out, variant.reference(case, inputs))


def test_selective_scan_arguments_give_our_reference():
    variant = REGISTRY.get("mamba-scan")
    case = Case(variant="mamba-scan", batch=2, heads=2, seq_len=30, head_dim=4, dtype="float64",
                params={"state_dim": 3, "chunk": 8})
    inputs = make_inputs(case)
    d_skip = variant.weights(case, inputs)["d_skip"].double()
    arguments = selective_scan_arguments(*selective_inputs(case, *inputs.tensors(), 3, torch.float64), d_skip)
    u, delta, a, b, c, d = (arguments[key] for key in ("u", "delta", "A", "B", "C", "D"))
    assert arguments["delta_softplus"] is False and u.shape == (2, 8, 30) and b.shape == (2, 3, 30)
    h = u.new_zeros(2, 8, 3)                                              # selective_scan_fn's documented recurrence
    ys = []
    for t in range(30):
        h = torch.exp(delta[:, :, t, None] * a) * h + (delta[:, :, t] * u[:, :, t])[..., None] * b[:, None, :, t]
        ys.append((h * c[:, None, :, t]).sum(-1) + d * u[:, :, t])       # y_t = C h_t + D u_t
    y = torch.stack(ys, dim=-1)                                           # (B, D, L)
    want = variant.reference(case, inputs)                                # (B, H, N, d)
    torch.testing.assert_close(y.transpose(1, 2).reshape(2, 30, 2, 4).transpose(1, 2), want)


def test_chunk_scan_arguments_give_our_reference():
    variant = REGISTRY.get("mamba2-ssd")
    case = Case(variant="mamba2-ssd", batch=2, heads=2, seq_len=30, head_dim=4, dtype="float64",
                params={"chunk": 8})
    inputs = make_inputs(case)
    d_skip = variant.weights(case, inputs)["d_skip"].double()                # (H, 1, 1)
    arguments = chunk_scan_arguments(*ssd_inputs(case, *inputs.tensors(), torch.float64), 8, d_skip)
    x, dt, a, b, c, d = (arguments[key] for key in ("x", "dt", "A", "B", "C", "D"))
    assert x.shape == (2, 30, 2, 4) and dt.shape == (2, 30, 2) and b.shape == (2, 30, 2, 4)
    assert arguments["chunk_size"] == 8
    h = x.new_zeros(2, 2, 4, 4)                                           # (B, H, n, P): h = exp(dt A) h + dt B xᵀ
    ys = []
    for t in range(30):
        h = torch.exp(dt[:, t] * a)[..., None, None] * h + (dt[:, t, :, None, None] * b[:, t, :, :, None]
                                                            * x[:, t, :, None, :])
        ys.append((c[:, t, :, :, None] * h).sum(-2) + d[:, None] * x[:, t])   # (B, H, P): C h_t + D x_t
    y = torch.stack(ys, dim=1)                                            # (B, L, H, P)
    torch.testing.assert_close(y.transpose(1, 2), variant.reference(case, inputs))


@pytest.mark.parametrize("name", ["fla-retnet", "fla-gla", "fla-deltanet", "fla-gated-deltanet",
                                  "mamba-ssm-scan", "mamba-ssm-ssd"])
def test_kernel_extras_say_why_not_here(name):
    variant = REGISTRY.get(name)
    case = variant.probe_case("cpu")
    reasons = variant.unsupported_reasons(case)
    assert any("CUDA kernel" in r for r in reasons), reasons
    if not torch.cuda.is_available():
        assert variant.unsupported_reasons(variant.probe_case("cuda"))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["fla-retnet", "fla-gla", "fla-deltanet", "fla-gated-deltanet",
                                  "mamba-ssm-scan", "mamba-ssm-ssd"])
def test_kernel_extras_match_our_reference_on_cuda(name):
    from attnbench.core.settings import MeasureSettings

    variant = REGISTRY.get(name)
    causal = name.startswith("fla")
    case = Case(variant=name, seq_len=1024, heads=4, head_dim=64, dtype="bfloat16", device="cuda", causal=causal,
                params=dict(variant.params))
    measure_accurate(case, variant, MeasureSettings(warmup_s=0.01, budget_s=0.05, telemetry=False))

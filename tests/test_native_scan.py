"""The native C selective scan: built once per machine, equal to the plain recurrence, and honest when it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import attnbench.variants.mamba as mamba
from attnbench import AttentionInputs, Case, c_arguments, native_library
from attnbench.measure.inputs import make_inputs
from attnbench.measure.native import NativeLibrary
from attnbench.variants._selective_scan import (
    SCAN_SOURCE,
    native_scan,
    selective_scan_native,
    softplus_bias_native,
)
from attnbench.variants.mamba import MambaScan, selective_scan_sequential

needs_native = pytest.mark.skipif(not native_scan().available, reason=f"no native scan: {native_scan().reason}")


def _layer(batch: int, heads: int, seq_len: int, head_dim: int, state_dim: int, dtype, seed: int = 0):
    """Δ, v (B, H, N, P), B, C, A, D as the scan takes them, and the same x flattened (B, N, D)."""
    generator = torch.Generator().manual_seed(seed)
    inner = heads * head_dim
    v = torch.randn(batch, heads, seq_len, head_dim, generator=generator, dtype=torch.float64)
    delta = torch.nn.functional.softplus(torch.randn(batch, seq_len, inner, generator=generator, dtype=torch.float64) - 1)
    b, c = (torch.randn(batch, seq_len, state_dim, generator=generator, dtype=torch.float64) for _ in range(2))
    a = -torch.rand(inner, state_dim, generator=generator, dtype=torch.float64) * 8 - 0.1
    d_skip = torch.randn(inner, generator=generator, dtype=torch.float64)
    return tuple(t.to(dtype) for t in (delta, v, b, c, a, d_skip))


def _want(delta, v, b, c, a, d_skip):
    """y + D ⊙ x from the float64 sequential recurrence, as (B, H, N, P)."""
    batch, heads, seq_len, head_dim = v.shape
    x = v.double().transpose(1, 2).reshape(batch, seq_len, heads * head_dim)
    y = selective_scan_sequential(delta.double(), x, b.double(), c.double(), a.double()) + x * d_skip.double()
    return y.view(batch, seq_len, heads, head_dim).transpose(1, 2)


@needs_native
@pytest.mark.parametrize(("shape", "threads"), [
    ((2, 3, 45, 16, 5), 2),      # heads of 16 lanes: v read in place
    ((1, 2, 33, 32, 16), 3),     # more threads than one block each
    ((2, 2, 20, 5, 3), 2),       # head width 5: one padded head of 16 channels
    ((1, 1, 7, 12, 1), 1),       # 12 channels, one state
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_scan_equals_the_sequential_recurrence(shape, threads, dtype):
    tensors = _layer(*shape, dtype=dtype)
    got = selective_scan_native(*tensors, threads=threads)
    want = _want(*tensors)
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
    bound = 2e-6 if dtype == torch.float32 else 1e-13
    assert float((got.double() - want).norm() / want.norm()) < bound
    assert float((got.double() - want).abs().max() / want.abs().max()) < 10 * bound


@needs_native
@pytest.mark.parametrize("shape", [(2, 3, 45, 16, 5), (2, 2, 20, 5, 3), (1, 1, 37, 16, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_backward_gives_the_sequential_recurrences_gradients(shape, dtype):
    """Every input's gradient (Δ, v, B, C, A, D) against autograd through the float64 recurrence, spans of 16 crossed."""
    tensors = [t.requires_grad_(True) for t in _layer(*shape, dtype=dtype)]
    got = selective_scan_native(*tensors)
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((got.double() * upstream).sum(), tensors)
    exact = [t.detach().double().requires_grad_(True) for t in tensors]
    want = torch.autograd.grad((_want(*exact) * upstream).sum(), exact)
    bound = 1e-6 if dtype == torch.float32 else 1e-13
    for name, grad, reference in zip(("delta", "v", "b", "c", "a", "d_skip"), grads, want, strict=True):
        assert grad.shape == reference.shape and grad.dtype == dtype, name
        assert float((grad.double() - reference).norm() / reference.norm()) < bound, name


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_c_softplus_with_its_bias_is_softplus_to_an_ulp(dtype):
    """Δ = softplus(z + b) in place, z from −60 to 60: against log1p(exp(·)) in float64 (torch's returns z above 20)."""
    generator = torch.Generator().manual_seed(5)
    z = (torch.rand(3, 37, 48, generator=generator, dtype=torch.float64) * 120 - 60).to(dtype)
    bias = torch.randn(48, generator=generator, dtype=torch.float64).to(dtype)
    pre = (z + bias).double()                                             # the sum rounded as the kernel rounds it
    want = pre.clamp(min=0) + torch.log1p(torch.exp(-pre.abs()))
    got = softplus_bias_native(z, bias, threads=3)
    assert got.data_ptr() == z.data_ptr()
    ulp = torch.finfo(dtype).eps
    assert float(((got.double() - want).abs() / want).max()) < 4 * ulp


@needs_native
def test_the_thread_split_does_not_change_a_single_bit():
    tensors = _layer(2, 4, 64, 16, 8, torch.float32)
    one = selective_scan_native(*tensors, threads=1)
    assert torch.equal(one, selective_scan_native(*tensors, threads=2))
    assert torch.equal(one, selective_scan_native(*tensors, threads=5))


@needs_native
def test_decays_that_underflow_and_a_zero_step_leave_the_state_as_the_reference_does():
    delta, v, b, c, a, d_skip = _layer(1, 1, 30, 16, 4, torch.float32)
    delta[:, 10:15] = 0.0                                                 # decay 1, no input: the state passes on
    delta[:, 20] = 500.0                                                  # exp(Δ A) under float32's smallest normal
    got = selective_scan_native(delta, v, b, c, a, d_skip)
    want = _want(delta, v, b, c, a, d_skip)
    assert torch.isfinite(got).all()
    assert float((got.double() - want).norm() / want.norm()) < 1e-5


@needs_native
def test_mamba_scan_runs_the_c_scan_in_fwd_cells_and_says_so():
    variant = MambaScan()
    fwd = Case(variant="mamba-scan", seq_len=40, batch=2, heads=2, head_dim=16, params={"state_dim": 4})
    assert variant.execution(fwd) == "native C scan"
    assert variant.execution(Case(variant="mamba-scan", seq_len=40, mode="fwd_bwd")) == "native C scan and backward"
    assert not variant.compiles_for(fwd) and variant.compiles_for(replace(fwd, device="cuda"))
    with torch.inference_mode():
        inputs = make_inputs(fwd)
        got = variant.prepare(fwd, inputs)()
        want = variant.reference(fwd, inputs)
    assert float((got.double() - want).norm() / want.norm()) < 2e-6
    trained = replace(fwd, mode="fwd_bwd")
    inputs = make_inputs(trained, requires_grad=True)
    weights = variant.weights(trained, inputs)
    learned = [w.requires_grad_(True) for w in weights.values()]
    out = variant.prepare(trained, AttentionInputs(*inputs.tensors(), weights=weights))()
    grads = torch.autograd.grad(out.sum(), [*inputs.tensors(), *learned])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def _fresh_process(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_without_a_compiler_or_when_turned_off_the_library_says_why(tmp_path):
    code = ("from attnbench.variants._selective_scan import native_scan; n = native_scan(); "
            "print(n.available); print(n.reason)")
    off = _fresh_process(code, ATTNBENCH_NATIVE="0", ATTNBENCH_CACHE_DIR=str(tmp_path))
    assert off.stdout.splitlines() == ["False", "native kernels are turned off (ATTNBENCH_NATIVE=0)"]
    lonely = _fresh_process(code, PATH=str(tmp_path), CC="", ATTNBENCH_CACHE_DIR=str(tmp_path))
    available, reason = lonely.stdout.splitlines()
    assert available == "False" and "no C compiler found" in reason
    assert not (tmp_path / "native").exists()


def test_mamba_scan_falls_back_to_compiled_blocks_with_the_same_output(monkeypatch):
    unbuilt = NativeLibrary(SCAN_SOURCE, None, reason="no C compiler found")
    monkeypatch.setattr(mamba, "native_scan", lambda: unbuilt)
    variant = MambaScan()
    # the shapes of test_selective_scan_blocks (batch 2, 12 channels, state 4, blocks of 16): one compile
    case = Case(variant="mamba-scan", seq_len=24, batch=2, heads=2, head_dim=6, params={"state_dim": 4, "chunk": 16})
    assert (variant.execution(case), variant.compiles_for(case)) == ("compiled time blocks", True)
    with torch.inference_mode():
        inputs = make_inputs(case)
        got = variant.prepare(case, inputs)()
        want = variant.reference(case, inputs)
    assert float((got.double() - want).norm() / want.norm()) < 2e-6


def test_a_source_that_does_not_compile_gives_the_compilers_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path))
    broken = tmp_path / "broken_kernel.c"
    broken.write_text("int f(void) { return missing_name; }\n")
    built = native_library(broken)
    assert isinstance(built, NativeLibrary) and not built.available
    assert "broken_kernel.c" in built.reason and "missing_name" in built.reason
    assert not list((tmp_path / "native").glob("*.so"))                  # no half-written library left behind


def test_a_build_is_reused_by_a_second_process_and_rebuilt_when_the_source_changes(tmp_path):
    source = tmp_path / "twice.c"
    source.write_text("int twice(int x) { return 2 * x; }\n")
    code = (f"from pathlib import Path; from attnbench import native_library; n = native_library(Path({str(source)!r})); "
            "print(n.library.twice(21)); print(n.path)")
    first = _fresh_process(code, ATTNBENCH_CACHE_DIR=str(tmp_path))
    answer, path = first.stdout.splitlines()
    assert answer == "42" and Path(path).parent == tmp_path / "native"
    built_at = Path(path).stat().st_mtime_ns
    again = _fresh_process(code, ATTNBENCH_CACHE_DIR=str(tmp_path))
    assert again.stdout.splitlines() == [answer, path] and Path(path).stat().st_mtime_ns == built_at
    source.write_text("int twice(int x) { return x + x + 0; }\n")
    edited = _fresh_process(code, ATTNBENCH_CACHE_DIR=str(tmp_path))
    assert edited.stdout.splitlines()[0] == "42" and edited.stdout.splitlines()[1] != path


def test_an_edited_header_the_source_includes_rebuilds_the_library(tmp_path):
    header = tmp_path / "value.h"
    header.write_text("#define VALUE 21\n")
    source = tmp_path / "uses_header.c"
    source.write_text('#include "value.h"\nint value(void) { return VALUE; }\n')
    code = (f"from pathlib import Path; from attnbench import native_library; n = native_library(Path({str(source)!r})); "
            "print(n.library.value()); print(n.path)")
    first = _fresh_process(code, ATTNBENCH_CACHE_DIR=str(tmp_path)).stdout.splitlines()
    header.write_text("#define VALUE 42\n")
    second = _fresh_process(code, ATTNBENCH_CACHE_DIR=str(tmp_path)).stdout.splitlines()
    assert first[0] == "21" and second[0] == "42" and first[1] != second[1]


def test_the_scan_source_ships_beside_its_module():
    assert SCAN_SOURCE.is_file() and SCAN_SOURCE.suffix == ".c"


def test_a_kernel_is_found_by_precision_and_called_with_tensors_ints_and_null(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path))
    source = tmp_path / "scale_kernels.c"
    source.write_text("#include <stdint.h>\n"
                      "void scale_f32(float *x, const float *by, int64_t n) { for (int64_t i = 0; i < n; i++) "
                      "x[i] *= by ? by[i] : 2.0f; }\n"
                      "void scale_f64(double *x, const double *by, int64_t n) { for (int64_t i = 0; i < n; i++) "
                      "x[i] *= by ? by[i] : 3.0; }\n")
    built = native_library(source)
    x32, x64 = torch.arange(4, dtype=torch.float32), torch.arange(4, dtype=torch.float64)
    built.kernel("scale", torch.float32)(*c_arguments(x32, None, 4))
    built.kernel("scale", torch.float64)(*c_arguments(x64, torch.full((4,), 0.5, dtype=torch.float64), 3))
    assert x32.tolist() == [0.0, 2.0, 4.0, 6.0] and x64.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert built.takes(torch.float64) and not built.takes(torch.float16) and not built.takes(torch.bfloat16)
    assert not NativeLibrary(source, None, reason="not built").takes(torch.float32)

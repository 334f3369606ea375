"""Setup paid once: the compile cache's folder, setup split into its parts, and the break-even call count."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic_runs import TIME_CONSTANT, SyntheticSpec, write_synthetic_run

from attnbench.core.case import Case
from attnbench.engine.compile_cache import compile_cache_dir, compile_cache_environment
from attnbench.measure import setup_parts
from attnbench.measure.cell.setup import prepare_step
from attnbench.measure.setup_parts import SetupClock, compile_seconds
from attnbench.report import build_report_html
from attnbench.report.breakeven import break_even_calls, break_even_rows
from attnbench.report.data import prepare
from attnbench.store import load_run
from attnbench.variants.flex import FlexAttention
from attnbench.variants.naive import NaiveAttention


def test_compiles_cache_under_attnbench_cache_unless_the_user_chose_a_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("ATTNBENCH_CACHE_DIR", str(tmp_path))
    assert compile_cache_environment() == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_a_compile_during_setup_is_counted_as_compile_time():
    def scaled_tanh(x):
        return torch.tanh(x) * 3.0 + 1.0

    clock = SetupClock()
    compiled = torch.compile(scaled_tanh, dynamic=False)
    clock.prepared()
    before = compile_seconds()
    out = compiled(torch.arange(8.0))
    parts = clock.parts()
    assert torch.allclose(out, scaled_tanh(torch.arange(8.0)))
    assert compile_seconds() > before
    assert parts.compile_s == pytest.approx(compile_seconds() - before, rel=1e-9)
    assert parts.total_s == pytest.approx(parts.compile_s + parts.prepare_s + parts.first_call_s)
    assert min(parts.to_dict().values()) >= 0


def test_compile_stack_warmup_runs_once_per_process_and_only_for_compiling_variants(monkeypatch):
    calls = []

    def warm() -> float:
        calls.append(1)
        return 0.0 if len(calls) > 1 else 2.5

    monkeypatch.setattr("attnbench.measure.cell.setup.warm_compile_stack", warm)
    naive = NaiveAttention()
    plain = Case(variant=naive.name, seq_len=16, batch=1, heads=2, head_dim=8)
    assert prepare_step(plain, naive).compile_warmup_s == 0.0 and calls == []

    class CompilingNaive(NaiveAttention):
        compiles = True

    first, second = (prepare_step(plain, CompilingNaive()) for _ in range(2))
    assert (first.compile_warmup_s, second.compile_warmup_s) == (2.5, 0.0) and len(calls) == 2
    assert FlexAttention.compiles and not NaiveAttention.compiles


def test_the_real_compile_stack_warmup_imports_dynamo_and_then_costs_nothing(monkeypatch):
    import sys

    monkeypatch.setattr(setup_parts, "_compile_stack_warm", False)
    seconds = setup_parts.warm_compile_stack()
    assert seconds >= 0.0 and "torch._dynamo" in sys.modules and "torch._inductor.compile_fx" in sys.modules
    assert setup_parts.warm_compile_stack() == 0.0


def test_break_even_is_the_first_call_count_where_the_totals_cross():
    calls = break_even_calls(setup_s=10.0, time_s=1.0, base_setup_s=1.0, base_time_s=4.0)
    assert calls == 3                                                    # 10 + 3·1 = 13 <= 1 + 3·4 = 13
    assert 10.0 + (calls - 1) * 1.0 > 1.0 + (calls - 1) * 4.0
    assert break_even_calls(10.0, 5.0, 1.0, 4.0) is None                 # slower per call: never
    assert break_even_calls(0.5, 1.0, 1.0, 4.0) is None                  # cheaper to set up: from the first call


def test_report_gives_the_break_even_of_a_faster_variant_that_sets_up_longer(tmp_path):
    spec = SyntheticSpec(setup_s=(("performer", 2.0),))
    run = load_run(write_synthetic_run(tmp_path, spec))
    rows = {(r.series, r.length): r for r in break_even_rows(prepare([run], "sdpa-flash"))}
    # performer (features=64) takes 300·c·N, sdpa-flash c·N² (c = TIME_CONSTANT), setup 2.0 s against 0.01 s
    for seq_len in (512, 1024, 2048, 4096):
        saved = TIME_CONSTANT * (seq_len ** 2 - 300 * seq_len)
        assert rows[("performer (features=64)", f"seq_len {seq_len}")].calls == math.ceil((2.0 - 0.01) / saved)
    assert ("performer (features=64)", "seq_len 256") not in rows         # not faster there
    html = build_report_html([run], baseline="sdpa-flash")
    assert '<section id="setup">' in html and "pays off after" in html

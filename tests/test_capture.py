"""Capturing q, k, v from a real model (`attnbench.measure.capture`), reading them back as a case's
``file:PATH`` inputs (`attnbench.measure.input_files`), and `attnbench capture` end to end."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as bound_sdpa  # bound at import time

from attnbench.core.case import Case
from attnbench.measure.capture import CaptureError, capture_attention
from attnbench.measure.input_files import (
    InputFileError,
    check_case_against_file,
    load_file_inputs,
    read_file_shapes,
)

ROOT = Path(__file__).resolve().parent.parent
ATTNBENCH = [sys.executable, "-m", "attnbench.cli"]
ORIGINAL_SDPA = torch._C._nn.scaled_dot_product_attention

# The tiny model, also written to a module file for the CLI test: 2 layers, d_model 64, 4 query heads
# sharing 2 key/value heads (GQA), causal, calling F.scaled_dot_product_attention.
TINY_MODEL = '''
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d_model=64, heads=4, kv_heads=2, sdpa=None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d_model // heads
        self.q_proj = nn.Linear(d_model, heads * self.head_dim)
        self.k_proj = nn.Linear(d_model, kv_heads * self.head_dim)
        self.v_proj = nn.Linear(d_model, kv_heads * self.head_dim)
        self.o_proj = nn.Linear(heads * self.head_dim, d_model)
        self.attn_out = nn.Identity()  # a place to hook the attention output
        self.sdpa = sdpa

    def project(self, x):
        batch, seq_len, _ = x.shape
        q = self.q_proj(x).view(batch, seq_len, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(x).view(batch, seq_len, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, N, d)
        v = self.v_proj(x).view(batch, seq_len, self.kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def forward(self, x):
        q, k, v = self.project(x)
        sdpa = self.sdpa or F.scaled_dot_product_attention
        out = self.attn_out(sdpa(q, k, v, is_causal=True, enable_gqa=True))  # (B, H, N, d)
        return x + self.o_proj(out.transpose(1, 2).flatten(2))


class Tiny(nn.Module):
    def __init__(self, vocab=50, layers=2, sdpa=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.blocks = nn.ModuleList(Block(sdpa=sdpa) for _ in range(layers))

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return x
'''
namespace: dict = {}
exec(compile(TINY_MODEL, "tiny_model", "exec"), namespace)
Tiny, Block = namespace["Tiny"], namespace["Block"]


def tiny(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return Tiny(**kwargs).eval()


def token_ids(batch=2, seq_len=12) -> torch.Tensor:
    return torch.randint(0, 50, (batch, seq_len), generator=torch.Generator().manual_seed(1))


def record_blocks(model) -> dict[int, dict[str, torch.Tensor]]:
    """Each block's input and attention output, from forward hooks (the model's own computation)."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    for index, block in enumerate(model.blocks):
        seen[index] = {}
        handles.append(block.register_forward_pre_hook(
            lambda m, args, i=index: seen[i].__setitem__("x", args[0].detach().clone())))
        handles.append(block.attn_out.register_forward_hook(
            lambda m, args, out, i=index: seen[i].__setitem__("out", out.detach().clone())))
    return seen, handles


def test_capture_writes_one_file_per_layer_with_what_the_layers_computed(tmp_path):
    model, ids = tiny(), token_ids()
    seen, handles = record_blocks(model)
    calls = capture_attention(model, ids, path=tmp_path / "captured")
    for handle in handles:
        handle.remove()

    assert [call.layer for call in calls] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "captured").iterdir()) == ["layer00.safetensors", "layer01.safetensors"]
    for call in calls:
        block = model.blocks[call.layer]
        assert call.path == tmp_path / "captured" / f"layer{call.layer:02d}.safetensors"
        with safe_open(str(call.path), framework="pt") as file:
            metadata = file.metadata()
            stored = {name: file.get_tensor(name) for name in ("q", "k", "v")}
        assert metadata == {
            "format": "attnbench-capture/1", "layer": str(call.layer), "batch": "2", "heads": "4", "seq_len": "12",
            "kv_heads": "2", "kv_len": "12", "head_dim": "16", "v_head_dim": "16", "dtype": "float32",
            "causal": "true", "is_causal": "true", "has_mask": "false", "mask": "causal", "scale": repr(0.25),
            "default_scale": "true", "dropout_p": "0.0", "enable_gqa": "true", "source": "Block",
            "module": f"blocks.{call.layer}"}
        assert stored["q"].shape == (2, 4, 12, 16) and stored["k"].shape == stored["v"].shape == (2, 2, 12, 16)
        with torch.no_grad():
            q, k, v = block.project(seen[call.layer]["x"])  # the layer's projections, recomputed
        for name, expected in zip("qkv", (q, k, v), strict=True):
            assert torch.equal(stored[name], expected), name
            assert torch.equal(getattr(call, name), expected), name
        replayed = F.scaled_dot_product_attention(stored["q"], stored["k"], stored["v"], is_causal=True,
                                                  enable_gqa=True)
        torch.testing.assert_close(replayed, seen[call.layer]["out"], rtol=1e-6, atol=1e-6)
    assert F.scaled_dot_product_attention is ORIGINAL_SDPA


def test_a_function_bound_at_import_time_is_captured_too():
    model = tiny(sdpa=bound_sdpa)
    calls = capture_attention(model, token_ids(), path=None)
    assert [(call.layer, call.module, call.causal) for call in calls] == [(0, "blocks.0", True), (1, "blocks.1", True)]
    assert all(call.path is None for call in calls)


def test_multihead_attention_in_train_mode_is_seen_through_torch_functional():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4, dropout=0.0, batch_first=True).train()
    x = torch.randn(2, 6, 32)
    calls = capture_attention(attention, x, x, x, need_weights=False, path=None)
    assert len(calls) == 1 and calls[0].q.shape == (2, 4, 6, 8) and calls[0].mask == "none"


def test_layers_max_calls_and_a_single_file(tmp_path):
    model, ids = tiny(layers=3), token_ids()
    only = capture_attention(model, ids, path=tmp_path / "one.safetensors", layers=1)
    assert [call.layer for call in only] == [1] and (tmp_path / "one.safetensors").is_file()
    assert read_file_shapes(tmp_path / "one.safetensors")["layer"] == 1
    assert [c.layer for c in capture_attention(model, ids, path=None, layers=[0, 2])] == [0, 2]
    assert [c.layer for c in capture_attention(model, ids, path=None, max_calls=2)] == [0, 1]
    with pytest.raises(CaptureError, match="layer 5 was asked for, but the forward made 3 attention calls"):
        capture_attention(model, ids, path=None, layers=[0, 5])
    with pytest.raises(CaptureError, match="exactly one layer"):
        capture_attention(model, ids, path=tmp_path / "two.safetensors")


def test_explicit_masks_are_classified():
    q = torch.randn(1, 2, 5, 8)

    class Masked(nn.Module):
        def forward(self, q, mask):
            return F.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    additive = torch.zeros(5, 5).masked_fill(~causal, float("-inf"))
    padding = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    padding[..., -1] = False
    for mask, kind in ((causal, "causal"), (additive, "causal"), (padding, "other"),
                       (torch.ones(5, 5, dtype=torch.bool), "full"), (torch.randn(5, 5), "other")):
        (call,) = capture_attention(Masked(), q, mask, path=None)
        assert (call.mask, call.has_mask, call.causal) == (kind, True, kind == "causal"), kind


def test_named_module_inputs_are_captured_with_a_forward_hook():
    class EagerCore(nn.Module):  # attention without SDPA: softmax(q k^T / sqrt(d)) v
        def forward(self, q, k, v, causal=False):
            scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
            return scores.softmax(-1) @ v

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.ModuleDict({"core": EagerCore()}) for _ in range(2))

        def forward(self, x):  # x (B, N, H, d)
            for layer in self.layers:
                x = layer["core"](x, x, x, causal=True)
            return x

    x = torch.randn(1, 7, 3, 4)
    calls = capture_attention(Model(), x, path=None, module_name="layers.*.core", layout="bnhd")
    assert [(c.layer, c.module, c.source, c.causal) for c in calls] == [
        (0, "layers.0.core", "EagerCore", True), (1, "layers.1.core", "EagerCore", True)]
    assert torch.equal(calls[0].q, x.transpose(1, 2))
    with pytest.raises(CaptureError, match="no module of Model is named 'layers.*.attn'"):
        capture_attention(Model(), x, path=None, module_name="layers.*.attn")


def test_no_sdpa_call_and_an_error_in_the_forward_leave_sdpa_restored():
    with pytest.raises(CaptureError, match="made no call to torch.nn.functional.scaled_dot_product_attention"):
        capture_attention(nn.Linear(4, 4), torch.randn(2, 4), path=None)

    class Broken(nn.Module):
        def forward(self, q):
            F.scaled_dot_product_attention(q, q, q)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        capture_attention(Broken(), torch.randn(1, 1, 3, 4), path=None)
    assert F.scaled_dot_product_attention is ORIGINAL_SDPA
    assert not torch.overrides._get_current_function_mode_stack()


# ---- input files -----------------------------------------------------------------------------------------------

def write_qkv(path: Path, q_shape=(2, 8, 16, 32), k_shape=(2, 2, 24, 32), v_shape=(2, 2, 24, 48),
              dtype=torch.bfloat16, metadata=None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    tensors = {name: torch.randn(shape, generator=generator).to(dtype)
               for name, shape in (("q", q_shape), ("k", k_shape), ("v", v_shape))}
    save_file(tensors, str(path), metadata=metadata)
    return tensors


def test_read_file_shapes_gives_the_case_fields_and_metadata(tmp_path):
    path = tmp_path / "qkv.safetensors"
    write_qkv(path, metadata={"layer": "3", "causal": "true", "scale": "0.125", "source": "LlamaAttention"})
    shapes = read_file_shapes(path)
    assert shapes == {"batch": 2, "heads": 8, "seq_len": 16, "kv_heads": 2, "kv_len": 24, "head_dim": 32,
                      "v_head_dim": 48, "dtype": "bfloat16", "layer": 3, "causal": True, "scale": 0.125,
                      "metadata": {"layer": "3", "causal": "true", "scale": "0.125", "source": "LlamaAttention"}}
    write_qkv(path, dtype=torch.float16)
    assert read_file_shapes(path)["causal"] is None and read_file_shapes(path)["metadata"] == {}


def test_read_file_shapes_does_not_import_torch(tmp_path):
    path = tmp_path / "qkv.safetensors"
    write_qkv(path)
    code = ("import sys; from attnbench.measure.input_files import read_file_shapes; "
            f"print(read_file_shapes({str(path)!r})['kv_len']); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "24", out.stderr


@pytest.mark.parametrize("shapes, message", [
    (((2, 8, 16, 32), (1, 2, 24, 32), (1, 2, 24, 32)), "one batch size, got 2, 1 and 1"),
    (((2, 8, 16, 32), (2, 3, 24, 32), (2, 3, 24, 32)), "q's 8 heads must be a multiple of k's 3 key/value heads"),
    (((2, 8, 16, 32), (2, 2, 24, 32), (2, 2, 20, 32)), "k and v must have the same length, got 24 and 20"),
    (((2, 8, 16, 32), (2, 2, 24, 16), (2, 2, 24, 32)), "k's head dim must equal q's, got 16 and 32"),
    (((8, 16, 32), (2, 2, 24, 32), (2, 2, 24, 32)), r"q has shape \(8, 16, 32\), expected 4 positive dims"),
])
def test_shapes_that_are_not_one_attention_call_name_the_file(tmp_path, shapes, message):
    path = tmp_path / "bad.safetensors"
    write_qkv(path, *shapes)
    with pytest.raises(ValueError, match=message) as caught:
        read_file_shapes(path)
    assert str(path) in str(caught.value)


def corrupt(path: Path, kind: str) -> None:
    header = json.dumps({"q": {"dtype": "F32", "shape": [1, 1, 2, 2], "data_offsets": [0, 16]}}).encode()
    if kind == "short":
        path.write_bytes(b"\x01\x02")
    elif kind == "huge header":
        path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    elif kind == "not json":
        path.write_bytes(struct.pack("<Q", 8) + b"not json")
    elif kind == "truncated":
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    elif kind == "no k":
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)


@pytest.mark.parametrize("kind, message", [
    ("short", "too short to be a safetensors file"),
    ("huge header", "header of 1000000000000 bytes"),
    ("not json", "header is not UTF-8 JSON"),
    ("truncated", "holds only 8 bytes of data"),
    ("no k", "has no tensor named k, v: expected tensors q"),
])
def test_corrupt_files_name_the_file(tmp_path, kind, message):
    path = tmp_path / "corrupt.safetensors"
    corrupt(path, kind)
    with pytest.raises(InputFileError, match=message) as caught:
        read_file_shapes(path)
    assert str(path) in str(caught.value) and isinstance(caught.value, ValueError)


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*attnbench capture") as caught:
        read_file_shapes(tmp_path / "nowhere.safetensors")
    assert str(tmp_path / "nowhere.safetensors") in str(caught.value)


def file_case(path: Path, **fields) -> Case:
    shape = dict(batch=2, heads=8, seq_len=16, kv_heads=2, kv_len=24, head_dim=32, v_head_dim=48) | fields
    return Case(variant="sdpa-math", inputs=f"file:{path}", **shape)


def test_check_case_against_file_names_each_disagreeing_field(tmp_path):
    path = tmp_path / "qkv.safetensors"
    write_qkv(path)
    assert check_case_against_file(file_case(path)) == []
    assert check_case_against_file(file_case(path, seq_len=1024, kv_heads=4, v_head_dim=32)) == [
        f"seq_len is 1024 but q in {path} has 16 queries",
        f"kv_heads is 4 but k in {path} has 2 key/value heads",
        f"v_head_dim is 32 but v in {path} has 48 dims per value head"]
    with pytest.raises(ValueError, match="not from a file:PATH"):
        check_case_against_file(Case(variant="sdpa-math", seq_len=16))


def test_load_file_inputs_returns_exactly_the_stored_tensors(tmp_path):
    path = tmp_path / "qkv.safetensors"
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        stored = write_qkv(path, dtype=dtype)
        loaded = load_file_inputs(file_case(path))
        for name, tensor in zip("qkv", loaded, strict=True):
            assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
            assert torch.equal(tensor, stored[name].to(torch.float32)), (dtype, name)
            assert torch.equal(tensor.to(dtype), stored[name])  # nothing was rounded
    stored = write_qkv(path, dtype=torch.float64)
    assert all(torch.equal(t, stored[n]) for n, t in zip("qkv", load_file_inputs(file_case(path)), strict=True))
    with pytest.raises(ValueError, match=f"batch is 4 but q in {path} has 2 sequences in its batch"):
        load_file_inputs(file_case(path, batch=4))


def test_a_capture_reads_back_as_case_inputs(tmp_path):
    model = tiny()
    (call,) = capture_attention(model, token_ids(), path=tmp_path / "c", layers=1)
    shapes = read_file_shapes(call.path)
    case = Case(variant="sdpa-math", inputs=f"file:{call.path}", causal=shapes["causal"],
                **{k: shapes[k] for k in ("batch", "heads", "seq_len", "kv_heads", "kv_len", "head_dim", "v_head_dim")})
    q, k, v = load_file_inputs(case)
    assert case.causal and torch.equal(q, call.q) and torch.equal(k, call.k) and torch.equal(v, call.v)


# ---- the command line ------------------------------------------------------------------------------------------

FACTORY = TINY_MODEL + '''

def make(seq_len, batch=1):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (batch, seq_len))
    return Tiny().eval(), {"ids": ids}


def bare():
    return Tiny()


def fixed():
    return Tiny(), (torch.zeros(1, 5, dtype=torch.long),)


def not_a_model():
    return 42
'''


@pytest.fixture
def factory_env(tmp_path):
    (tmp_path / "tinyfactory.py").write_text(FACTORY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def attnbench(*args, env, cwd):
    return subprocess.run([*ATTNBENCH, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_captures_from_a_factory(tmp_path, factory_env):
    out = attnbench("capture", "tinyfactory:make", "--seq-len", "10", "--batch", "3", "-o", "captured",
                    env=factory_env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for layer in (0, 1):
        shapes = read_file_shapes(tmp_path / "captured" / f"layer{layer:02d}.safetensors")
        assert (shapes["batch"], shapes["heads"], shapes["kv_heads"], shapes["seq_len"], shapes["causal"]) == (
            3, 4, 2, 10, True)
    assert "layer 1 (blocks.1): batch=3 heads=4 seq_len=10 kv_heads=2" in out.stdout
    assert "inputs = \"file:captured/layer00.safetensors\"" in out.stdout

    out = attnbench("capture", "tinyfactory.py:bare", "--seq-len", "6", "--vocab", "50", "--layer", "1",
                    "-o", "one.safetensors", env=factory_env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert read_file_shapes(tmp_path / "one.safetensors")["seq_len"] == 6


@pytest.mark.parametrize("args, message", [
    (["tinyfactory"], "must be package.module:function"),
    (["tinyfactory:mkae"], "has no attribute 'mkae' (did you mean: make"),
    (["no_such_module_xyz:make"], "no module named 'no_such_module_xyz'"),
    (["tinyfactory:not_a_model"], "returned int, expected a torch.nn.Module"),
    (["tinyfactory:fixed", "--seq-len", "8"], "--seq-len given, but tinyfactory:fixed made its own inputs"),
    (["tinyfactory:bare", "--seq-len", "8"], "give --vocab V"),
    (["tinyfactory:make", "--seq-len", "8", "--layer", "7"], "layer 7 was asked for"),
])
def test_cli_bad_input_exits_2_with_a_message(tmp_path, factory_env, monkeypatch, args, message):
    """In-process through click's runner; `test_cli.py` runs the console script's exit 2 for real."""
    from click.testing import CliRunner

    from attnbench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinyfactory", raising=False)
    try:
        out = CliRunner().invoke(main, ["capture", *args, "-o", "out"])
    finally:
        sys.modules.pop("tinyfactory", None)
    assert out.exit_code == 2, out.output
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()

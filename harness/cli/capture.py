"""`attnbench capture ENTRY -o OUT [--layer K]... [--seq-len N] [--batch B] [--vocab V] [--arg KEY=VALUE]...`

Runs one forward of the user's model and writes the q, k, v of its attention
calls as safetensors files (`attnbench.measure.capture`). Torch and the user's
code are imported only when the command runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path

import click

from attnbench.core.errors import AttnbenchError, did_you_mean

HELP = """Capture the q, k and v a real model feeds its attention, one safetensors file per layer.

\b
ENTRY names a function you write, as package.module:function or path/to/file.py:function
(the current folder is importable). It returns either
  (model, inputs)   inputs: a dict of keyword arguments (a tokenizer's output),
                    a tuple of positional arguments, or one tensor; or
  model             attnbench then feeds it random token ids (--batch, --seq-len,
                    --vocab or model.config.vocab_size), seeded with --seed.
It is called with those of seq_len, batch, device and seed that were given and
that it takes as parameters, plus every --arg KEY=VALUE (as strings).

\b
One forward runs in eval mode under torch.no_grad(); every call to
torch.nn.functional.scaled_dot_product_attention is captured (layer K is the
K-th call), or with --module the inputs of the modules with that name or
pattern (called as module(q, k, v, ...)). OUT is a folder (OUT/layer00.safetensors,
...) or, with one --layer, a .safetensors file. A case then reads it:
inputs = "file:OUT/layer00.safetensors", with the shape the command prints.

\b
A Hugging Face example, on your machine (capture_llama.py):
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer
\b
  def make(seq_len=512, device="cpu"):
      name = "Qwen/Qwen2.5-0.5B"  # any causal LM on the Hub
      tok = AutoTokenizer.from_pretrained(name)
      model = AutoModelForCausalLM.from_pretrained(
          name, attn_implementation="sdpa", torch_dtype=torch.bfloat16).to(device)
      text = open("some_text.txt").read()
      batch = tok([text], return_tensors="pt", truncation=True,
                  max_length=seq_len).to(device)
      return model, dict(batch)
\b
  attnbench capture capture_llama.py:make --seq-len 512 --layer 0 --layer 15 -o captured/
"""


@click.command("capture", help=HELP)
@click.argument("entry")
@click.option("-o", "--output", required=True, type=click.Path(), help="folder, or a .safetensors file with one --layer")
@click.option("--layer", "layers", multiple=True, type=click.IntRange(min=0), metavar="K",
              help="keep the K-th attention call (0 is the first; repeatable; default: all)")
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="tokens per sequence (passed to ENTRY, or for random token ids)")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="sequences (passed to ENTRY, or for random token ids; default 1)")
@click.option("--vocab", type=click.IntRange(min=1), default=None,
              help="token ids are drawn below this (default: model.config.vocab_size) when ENTRY returns a bare model")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default=None,
              help="passed to ENTRY if it takes device, else the model and inputs are moved there")
@click.option("--seed", type=int, default=0, show_default=True, help="seeds torch before ENTRY runs, and the token ids")
@click.option("--arg", "entry_args", multiple=True, metavar="KEY=VALUE", help="a keyword argument for ENTRY (repeatable)")
@click.option("--module", "module_name", default=None, metavar="NAME",
              help="capture the inputs of the modules with this qualified name or fnmatch pattern instead of SDPA")
@click.option("--layout", type=click.Choice(["bhnd", "bnhd"]), default="bhnd", show_default=True,
              help="with --module: the modules take (B, H, N, d) or (B, N, H, d)")
@click.option("--max-calls", type=click.IntRange(min=1), default=None, help="keep at most this many calls")
def capture_command(entry, output, layers, seq_len, batch, vocab, device, seed, entry_args, module_name, layout,
                    max_calls) -> None:
    import torch

    from attnbench.measure.capture import capture_attention

    factory, label = load_entry(entry)
    extra = parse_entry_args(entry_args)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AttnbenchError("--device cuda was asked for, but torch sees no CUDA device here; use --device cpu")
    offered = {name: value for name, value in (("seq_len", seq_len), ("batch", batch), ("device", device),
                                               ("seed", seed)) if value is not None}
    accepted = _accepted(factory, label, offered, extra)
    torch.manual_seed(seed)
    made = _call_user(label, "", lambda: factory(**accepted))
    model, inputs = _split(made, label)
    if inputs is None:
        inputs = _token_ids(model, label, seq_len, batch or 1, vocab, seed)
    else:
        unused = [f"--{name.replace('_', '-')}" for name, value in (("seq_len", seq_len), ("batch", batch),
                                                                   ("vocab", vocab))
                  if value is not None and name not in accepted]
        if unused:
            raise AttnbenchError(f"{' and '.join(unused)} given, but {label} made its own inputs and takes no such "
                                 "parameter: add it to the function's parameters, or drop the flag")
    if device is not None and "device" not in accepted:
        model = model.to(device)
        inputs = _to_device(inputs, device)
    model.eval()
    args, kwargs = _as_call(inputs)
    calls = _call_user(label, f" while running the forward of {type(model).__name__}",
                       lambda: capture_attention(model, *args, path=output, layers=layers or None,
                                                 module_name=module_name, layout=layout, max_calls=max_calls,
                                                 **kwargs),
                       passthrough=AttnbenchError)
    for call in calls:
        fields = call.shape_fields
        shape = " ".join(f"{k}={v}" for k, v in fields.items())
        notes = [] if call.mask in ("none", "causal") else [f"mask {call.mask}: a case cannot reproduce it"]
        if not call.default_scale:
            notes.append(f"scale {call.scale:g} is not 1/sqrt(head_dim)")
        click.echo(f"layer {call.layer} ({call.module or call.source}): {shape} dtype={call.dtype} "
                   f"causal={str(call.causal).lower()} -> {call.path}" + "".join(f"; note: {n}" for n in notes))
    first = calls[0]
    click.echo(f"use it in a suite as inputs = \"file:{first.path}\" (with the shape above), or e.g. "
               f"attnbench profile sdpa-math --inputs file:{first.path} --seq-len {first.q.shape[2]} "
               f"--batch {first.q.shape[0]} --heads {first.q.shape[1]} --kv-heads {first.k.shape[1]} "
               f"--head-dim {first.q.shape[3]}{' --causal' if first.causal else ''}")


def load_entry(entry: str):
    """'pkg.mod:func' or 'path/file.py:func' -> (the callable, a label for messages); AttnbenchError when it cannot."""
    module_part, sep, attribute = entry.rpartition(":")
    if not sep or not module_part or not attribute:
        raise AttnbenchError(f"ENTRY {entry!r} must be package.module:function or path/to/file.py:function, "
                             "e.g. my_models:make_llama")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        file = Path(module_part)
        if not file.is_file():
            raise AttnbenchError(f"ENTRY {entry!r}: there is no file {file}")
        name = "attnbench_capture_entry_" + file.stem
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _call_user(entry, f" while importing {file}", lambda: spec.loader.exec_module(module))
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_part.startswith(exc.name):
                raise AttnbenchError(f"ENTRY {entry!r}: no module named {exc.name!r} (searched the current folder "
                                     "and PYTHONPATH); give a path/to/file.py:function instead?") from None
            _user_failed(entry, " while importing " + module_part, exc)
        except Exception as exc:  # the user's module failed while it was imported
            _user_failed(entry, " while importing " + module_part, exc)
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise AttnbenchError(f"ENTRY {entry!r}: {module_part} has no attribute {part!r}"
                                 f"{did_you_mean(part, names)}")
        target = getattr(target, part)
    if not callable(target):
        raise AttnbenchError(f"ENTRY {entry!r} is a {type(target).__name__}, not a function that returns a model "
                             "or (model, inputs)")
    return target, entry


def parse_entry_args(pairs) -> dict[str, str]:
    """('dtype=bf16', ...) -> {'dtype': 'bf16'}; AttnbenchError for a pair without '='."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AttnbenchError(f"--arg {pair!r} must be KEY=VALUE with KEY a Python name, e.g. --arg dtype=bfloat16")
        parsed[key.strip()] = value
    return parsed


def _accepted(factory, label: str, offered: dict, extra: dict) -> dict:
    """The keyword arguments ENTRY receives: the offered ones it takes, and every --arg (which it must take)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: offer only what was asked for explicitly
        return dict(extra)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [key for key in extra if key not in named and not takes_any]
    if unknown:
        raise AttnbenchError(f"{label} takes no parameter {', '.join(map(repr, unknown))} given with --arg "
                             f"(its parameters: {', '.join(parameters) or 'none'})")
    return {**{k: v for k, v in offered.items() if k in named or takes_any}, **extra}


def _split(made, label: str):
    """(model, inputs) or (model, None) from what ENTRY returned."""
    import torch

    if isinstance(made, torch.nn.Module):
        return made, None
    if isinstance(made, tuple | list) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        return made[0], made[1]
    raise AttnbenchError(f"{label} returned {type(made).__name__}, expected a torch.nn.Module or a pair "
                         "(model, inputs)")


def _token_ids(model, label: str, seq_len, batch: int, vocab, seed: int):
    import torch

    if seq_len is None:
        raise AttnbenchError(f"{label} returned a model without inputs: give --seq-len N for random token ids "
                             "(or return (model, inputs))")
    if vocab is None:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if not isinstance(vocab, int) or vocab < 1:
            raise AttnbenchError(f"{label} returned a {type(model).__name__} without config.vocab_size: give "
                                 "--vocab V for random token ids in [0, V)")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq_len), generator=generator)


def _to_device(inputs, device: str):
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict) or hasattr(inputs, "keys"):
        return {key: _to_device(inputs[key], device) for key in inputs.keys()}
    if isinstance(inputs, tuple | list):
        return type(inputs)(_to_device(item, device) for item in inputs)
    return inputs


def _as_call(inputs) -> tuple[tuple, dict]:
    """The forward's positional and keyword arguments: a mapping is keywords, a tuple or list positions."""
    if isinstance(inputs, dict) or (hasattr(inputs, "keys") and hasattr(inputs, "__getitem__")):
        return (), {str(key): inputs[key] for key in inputs.keys()}
    if isinstance(inputs, tuple | list):
        return tuple(inputs), {}
    return (inputs,), {}


def _call_user(label: str, where: str, action, passthrough=()):
    """Run the user's code; an exception it raises is theirs: print its traceback, exit 2 with one line."""
    try:
        return action()
    except (click.exceptions.ClickException, click.exceptions.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if passthrough and isinstance(exc, passthrough):
            raise
        _user_failed(label, where, exc)


def _user_failed(label: str, where: str, exc: Exception):
    click.echo("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), err=True)
    raise AttnbenchError(f"{label} raised {type(exc).__name__}{where}: {exc} (its traceback is above)") from None

"""Capture the q, k and v a real model feeds its attention, as safetensors files a case can read.

    calls = capture_attention(model, input_ids, path="captured/")   # captured/layer00.safetensors, ...

One forward of any ``torch.nn.Module`` runs under ``torch.no_grad()``. Each
call to ``torch.nn.functional.scaled_dot_product_attention`` it makes is
recorded (its layer is the call's position: 0, 1, ...), or, with
`module_name`, the inputs of the named modules. Each kept call is written as
one file with tensors ``q`` (B, H, N, d), ``k`` (B, Hkv, M, d), ``v`` (B, Hkv,
M, dv), exactly as the model passed them (dtype kept; GQA's fewer key/value
heads kept), and string ``__metadata__``. A case reads it back with
``inputs = "file:captured/layer00.safetensors"`` (`attnbench.measure.input_files`).

Which SDPA calls are seen. Two mechanisms, both undone when the forward ends
or raises:

- ``torch.nn.functional.scaled_dot_product_attention`` is replaced by a
  recording wrapper: every caller that looks it up when it calls
  (``F.scaled_dot_product_attention(...)``, ``torch.nn.functional.…``,
  Hugging Face's ``sdpa_attention_forward``) and torch's own
  ``F.multi_head_attention_forward`` (which calls the module global) are seen;
- a ``torch.overrides.TorchFunctionMode`` sees the call however the function
  was bound: ``from torch.nn.functional import scaled_dot_product_attention
  [as sdpa]`` at import time, a reference kept in a dict or closure,
  ``torch._C._nn.scaled_dot_product_attention``. (A call seen by both is
  recorded once.)

Not seen: attention that never calls SDPA (eager ``softmax(q @ k.T)``
implementations: use `module_name`; ``flash_attn``, xformers or custom
kernels; the fused fast path ``torch._native_multi_head_attention`` that
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` take in eval
mode), compiled or scripted graphs (``torch.compile``, TorchScript,
``torch.export``) and calls made inside another ``__torch_function__`` handler.
For Hugging Face models load with ``attn_implementation="sdpa"``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from attnbench.core.errors import AttnbenchError
from attnbench.measure.input_files import InputFileError, check_attention_shapes

FORMAT = "attnbench-capture/1"
SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
LAYOUTS = ("bhnd", "bnhd")


class CaptureError(AttnbenchError):
    """A capture that cannot be done as asked: no attention call seen, a layer that was not called, a bad path."""


@dataclass(frozen=True, eq=False)
class CapturedCall:
    """One attention call of the forward: its inputs on the CPU, as the model passed them, and how it was called.

    `mask` says what the call masked: ``none``; ``causal`` (``is_causal`` with
    N == M, or an `attn_mask` that is exactly attnbench's end-aligned causal
    mask); ``causal_top_left`` (``is_causal`` with N != M: SDPA aligns the
    diagonal to the top left, attnbench's causal to the bottom right);
    ``full`` (a mask that hides nothing); ``other`` (padding, windows, biases...:
    a case cannot reproduce it). `scale` is the one the call used (its
    ``scale=``, else 1/sqrt(d)); `default_scale` says it was 1/sqrt(d).
    """

    layer: int
    q: torch.Tensor  # (B, H, N, d)
    k: torch.Tensor  # (B, Hkv, M, d)
    v: torch.Tensor  # (B, Hkv, M, dv)
    is_causal: bool
    has_mask: bool
    mask: str
    scale: float
    default_scale: bool
    dropout_p: float
    enable_gqa: bool
    source: str  # class name of the innermost module running when the call was made
    module: str  # its qualified name in the model ("" for the model itself)
    path: Path | None = None  # the file it was written to

    @property
    def causal(self) -> bool:
        """True when the call computed attnbench's causal attention (a case's ``causal = true``)."""
        return self.mask == "causal"

    @property
    def dtype(self) -> str:
        return str(self.q.dtype).removeprefix("torch.")

    @property
    def shape_fields(self) -> dict[str, int]:
        """The case fields: batch, heads, seq_len, kv_heads, kv_len, head_dim, v_head_dim."""
        batch, heads, seq_len, head_dim = self.q.shape
        _, kv_heads, kv_len, _ = self.k.shape
        return {"batch": batch, "heads": heads, "seq_len": seq_len, "kv_heads": kv_heads, "kv_len": kv_len,
                "head_dim": head_dim, "v_head_dim": self.v.shape[3]}

    def metadata(self) -> dict[str, str]:
        """The file's ``__metadata__``: every value a string, as safetensors requires."""
        fields = {"format": FORMAT, "layer": self.layer, **self.shape_fields, "dtype": self.dtype,
                  "causal": self.causal, "is_causal": self.is_causal, "has_mask": self.has_mask,
                  "mask": self.mask, "scale": repr(self.scale), "default_scale": self.default_scale,
                  "dropout_p": repr(self.dropout_p), "enable_gqa": self.enable_gqa, "source": self.source,
                  "module": self.module}
        return {key: (str(value).lower() if isinstance(value, bool) else str(value)) for key, value in fields.items()}


def capture_attention(model: torch.nn.Module, *args: Any, path: str | Path | None,
                      layers: int | Iterable[int] | None = None, module_name: str | None = None,
                      layout: str = "bhnd", max_calls: int | None = None, **kwargs: Any) -> list[CapturedCall]:
    """Run ``model(*args, **kwargs)`` once under ``torch.no_grad()`` and capture its attention inputs.

    - `path`: a folder (created; one ``layerKK.safetensors`` per kept call,
      overwriting files of the same name), a ``.safetensors`` file (exactly one
      call must be kept: pass `layers`), or None to write nothing.
    - `layers`: the call indices to keep (0 is the first attention call of the
      forward); None keeps all.
    - `max_calls`: keep at most this many calls; later calls run untouched.
    - `module_name`: instead of SDPA, capture the inputs of the modules whose
      qualified name matches this name or ``fnmatch`` pattern (``"layers.*.attn.core"``),
      for modules called as ``module(q, k, v, ...)`` (or ``query=``, ``key=``,
      ``value=``); `layout` says whether those are (B, H, N, d) (``bhnd``) or
      (B, N, H, d) (``bnhd``, transposed on capture). Keyword ``is_causal`` or
      ``causal``, ``attn_mask``/``mask``/``attention_mask`` and ``scale`` are
      recorded when given.

    The model is not moved or switched to eval mode: call ``model.eval()``
    first so dropout is off. Returns the kept calls in call order; raises
    `CaptureError` when no call was seen or a layer asked for was not called.
    """
    wanted = _wanted_layers(layers)
    if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1):
        raise CaptureError(f"max_calls must be a positive integer, got {max_calls!r}")
    if layout not in LAYOUTS:
        raise CaptureError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    target = _check_path(path, wanted)
    recorder = _Recorder(model, wanted, max_calls)
    with torch.no_grad(), recorder.module_stack():
        if module_name is None:
            with recorder.sdpa_intercepted():
                model(*args, **kwargs)
            what = "torch.nn.functional.scaled_dot_product_attention"
        else:
            with recorder.modules_hooked(module_name, layout):
                model(*args, **kwargs)
            what = f"a module matching {module_name!r}"
    calls = recorder.calls
    if recorder.seen == 0:
        hint = ("load a Hugging Face model with attn_implementation='sdpa', or name the module that computes "
                "attention with module_name (--module)") if module_name is None else "check the name against model.named_modules()"
        raise CaptureError(f"the forward of {type(model).__name__} made no call to {what}: {hint}")
    missing = sorted(layer for layer in (wanted or ()) if layer not in {call.layer for call in calls})
    if missing:
        limit = f" (max_calls={max_calls} kept the first {max_calls})" if max_calls is not None else ""
        raise CaptureError(f"layer {', '.join(map(str, missing))} was asked for, but the forward made "
                           f"{recorder.seen} attention calls, layers 0..{recorder.seen - 1}{limit}")
    if target is not None:
        calls = _write(calls, target)
    return calls


def _wanted_layers(layers) -> frozenset[int] | None:
    if layers is None:
        return None
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in chosen):
        raise CaptureError(f"layers must be call indices >= 0 (0 is the first attention call), got {layers!r}")
    return frozenset(chosen)


def _check_path(path, wanted) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if path.suffix == ".safetensors":
        if wanted is None or len(wanted) != 1:
            raise CaptureError(f"{path} is one file, so exactly one layer must be kept: pass layers=K (--layer K), "
                               "or give a folder for one file per layer")
        if path.is_dir():
            raise CaptureError(f"{path} is a folder; give a file name that is not taken, or the folder without "
                               ".safetensors")
    elif path.exists() and not path.is_dir():
        raise CaptureError(f"{path} exists and is not a folder: give a folder (one layerKK.safetensors per layer) "
                           "or a .safetensors file name")
    return path


class _Recorder:
    """Counts attention calls in order, keeps the wanted ones, and knows which module is running."""

    def __init__(self, model: torch.nn.Module, wanted: frozenset[int] | None, max_calls: int | None):
        self.model = model
        self.wanted = wanted
        self.max_calls = max_calls
        self.seen = 0
        self.calls: list[CapturedCall] = []
        self.stack: list[torch.nn.Module] = []
        self.names = {id(module): name for name, module in model.named_modules()}
        self.inside_wrapper = False

    def module_stack(self):
        """Forward pre-hooks and hooks on every submodule keep `stack`: the modules running now, innermost last."""
        handles = []
        for module in self.model.modules():
            handles.append(module.register_forward_pre_hook(lambda m, args: self.stack.append(m)))
            handles.append(module.register_forward_hook(lambda m, args, out: self._pop(m), always_call=True))
        return _Removing(handles)

    def _pop(self, module) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()

    def sdpa_intercepted(self):
        return _Intercepted(self)

    def modules_hooked(self, pattern: str, layout: str):
        matched = [(name, module) for name, module in self.model.named_modules()
                   if name == pattern or fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            names = [name for name, _ in self.model.named_modules() if name]
            from attnbench.core.errors import did_you_mean

            raise CaptureError(f"no module of {type(self.model).__name__} is named {pattern!r}"
                               f"{did_you_mean(pattern, names)}; its modules include "
                               f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")

        def hook(module, args, kwargs):
            self.record_module(module, args, kwargs, layout)

        return _Removing([module.register_forward_pre_hook(hook, with_kwargs=True) for _, module in matched])

    def _next_layer(self) -> int | None:
        """The index of this call, or None when it is not kept."""
        layer = self.seen
        self.seen += 1
        if self.max_calls is not None and len(self.calls) >= self.max_calls:
            return None
        if self.wanted is not None and layer not in self.wanted:
            return None
        return layer

    def record_sdpa(self, args: tuple, kwargs: dict) -> None:
        bound = dict(zip(SDPA_PARAMETERS, args, strict=False)) | kwargs
        bound = {**SDPA_DEFAULTS, **bound}
        layer = self._next_layer()
        if layer is None:
            return
        self._keep(layer, bound["query"], bound["key"], bound["value"], is_causal=bool(bound["is_causal"]),
                   attn_mask=bound["attn_mask"], scale=bound["scale"], dropout_p=float(bound["dropout_p"]),
                   enable_gqa=bool(bound["enable_gqa"]))

    def record_module(self, module, args: tuple, kwargs: dict, layout: str) -> None:
        names = (("query", "q"), ("key", "k"), ("value", "v"))
        tensors = list(args[:3])
        for position, aliases in enumerate(names[len(tensors):], start=len(tensors)):
            given = next((kwargs[a] for a in aliases if a in kwargs), None)
            if given is None:
                raise CaptureError(f"module {self.names.get(id(module), '?')} ({type(module).__name__}) was called "
                                   f"without a {aliases[0]} (argument {position + 1}): module_name needs a module "
                                   "called as module(q, k, v, ...)")
            tensors.append(given)
        layer = self._next_layer()
        if layer is None:
            return
        if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in tensors):
            raise CaptureError(f"module {self.names.get(id(module), '?')} was called with "
                               f"{[tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in tensors]}"
                               ": expected three 4-D tensors q, k, v")
        if layout == "bnhd":
            tensors = [t.transpose(1, 2) for t in tensors]
        mask = next((kwargs[a] for a in ("attn_mask", "mask", "attention_mask") if kwargs.get(a) is not None), None)
        causal = next((kwargs[a] for a in ("is_causal", "causal") if a in kwargs), False)
        # module_stack's pre-hook ran first, so the module itself is the innermost one: the source
        self._keep(layer, *tensors, is_causal=bool(causal), attn_mask=mask, scale=kwargs.get("scale"),
                   dropout_p=float(kwargs.get("dropout_p", 0.0)), enable_gqa=tensors[1].shape[1] != tensors[0].shape[1])

    def _keep(self, layer: int, q, k, v, *, is_causal: bool, attn_mask, scale, dropout_p: float,
              enable_gqa: bool) -> None:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in (q, k, v)]
        if None in shapes or any(len(s) != 4 for s in shapes):
            raise CaptureError(f"attention call {layer} has q, k, v of shapes {shapes}: only 4-D (B, H, N, d) "
                               "calls can be captured")
        try:
            check_attention_shapes(*shapes, where=f"attention call {layer}")
        except InputFileError as exc:
            raise CaptureError(str(exc)) from None
        seq_len, kv_len, head_dim = shapes[0][2], shapes[1][2], shapes[0][3]
        source = self.stack[-1] if self.stack else self.model
        self.calls.append(CapturedCall(
            layer=layer, q=_cpu_copy(q), k=_cpu_copy(k), v=_cpu_copy(v), is_causal=is_causal,
            has_mask=attn_mask is not None, mask=_classify_mask(is_causal, attn_mask, seq_len, kv_len),
            scale=float(scale) if scale is not None else 1.0 / math.sqrt(head_dim),
            default_scale=scale is None or math.isclose(float(scale), 1.0 / math.sqrt(head_dim), rel_tol=1e-6),
            dropout_p=dropout_p, enable_gqa=enable_gqa, source=type(source).__name__,
            module=self.names.get(id(source), type(source).__name__)))


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _classify_mask(is_causal: bool, attn_mask, seq_len: int, kv_len: int) -> str:
    """none, causal, causal_top_left, full or other (see `CapturedCall`)."""
    if attn_mask is None:
        if not is_causal:
            return "none"
        return "causal" if seq_len == kv_len else "causal_top_left"
    if is_causal:  # SDPA refuses both, but a hooked module may take both
        return "other"
    mask = attn_mask.detach().to("cpu")
    if mask.dtype == torch.bool:
        visible = mask
    elif mask.is_floating_point():
        finite = torch.isfinite(mask) & (mask > torch.finfo(mask.dtype).min / 2)
        if bool((mask[finite] != 0).any()):
            return "other"  # an additive bias (ALiBi, relative positions): not a plain mask
        visible = finite
    else:
        return "other"
    try:
        visible = torch.broadcast_to(visible, (*visible.shape[:-2], seq_len, kv_len))
    except RuntimeError:
        return "other"
    if bool(visible.all()):
        return "full"
    rows = torch.arange(seq_len).unsqueeze(1)
    causal = torch.arange(kv_len).unsqueeze(0) <= rows + (kv_len - seq_len)  # attnbench's end-aligned causal
    return "causal" if bool((visible == causal).all()) else "other"


def _write(calls: list[CapturedCall], target: Path) -> list[CapturedCall]:
    from dataclasses import replace

    from safetensors.torch import save_file

    if target.suffix == ".safetensors":
        files = {calls[0].layer: target}
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        width = max(2, len(str(max(call.layer for call in calls))))
        files = {call.layer: target / f"layer{call.layer:0{width}d}.safetensors" for call in calls}
    written = []
    for call in calls:
        file = files[call.layer]
        try:
            save_file({"q": call.q, "k": call.k, "v": call.v}, str(file), metadata=call.metadata())
        except OSError as exc:
            raise CaptureError(f"cannot write {file}: {exc.strerror or exc}") from None
        written.append(replace(call, path=file))
    return written


class _Removing:
    """A context manager that removes hook handles on exit, even when the forward raised."""

    def __init__(self, handles):
        self.handles = handles

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False


class _Intercepted:
    """F.scaled_dot_product_attention replaced by a recording wrapper, plus a TorchFunctionMode for other bindings."""

    def __init__(self, recorder: _Recorder):
        self.recorder = recorder
        self.original = F.scaled_dot_product_attention
        self.mode = _SDPAMode(recorder, self.original)

    def __enter__(self):
        recorder, original = self.recorder, self.original

        def scaled_dot_product_attention(*args, **kwargs):
            if recorder.inside_wrapper:
                return original(*args, **kwargs)
            recorder.record_sdpa(args, kwargs)
            recorder.inside_wrapper = True  # the mode below must not record this call again
            try:
                return original(*args, **kwargs)
            finally:
                recorder.inside_wrapper = False

        scaled_dot_product_attention.__doc__ = original.__doc__
        scaled_dot_product_attention.__wrapped__ = original
        F.scaled_dot_product_attention = scaled_dot_product_attention
        try:
            self.mode.__enter__()
        except BaseException:
            F.scaled_dot_product_attention = original
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.mode.__exit__(*exc)
        finally:
            F.scaled_dot_product_attention = self.original
        return False


class _SDPAMode(TorchFunctionMode):
    """Sees SDPA however it was bound (from-imports, stored references, torch._C._nn)."""

    def __init__(self, recorder: _Recorder, original):
        super().__init__()
        self.recorder = recorder
        self.original = original

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is self.original and not self.recorder.inside_wrapper:
            self.recorder.record_sdpa(args, kwargs)
        return func(*args, **kwargs)

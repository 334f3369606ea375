"""q, k and v from a safetensors file: the ``file:PATH`` value of a case's `inputs` axis.

The file holds three tensors, ``q`` (B, H, N, d), ``k`` (B, Hkv, M, d) and
``v`` (B, Hkv, M, dv), and optionally string ``__metadata__`` (what
`attnbench.measure.capture` writes: layer, causal, scale, dtype, source...).
`attnbench capture` writes such files from a real model.

`read_file_shapes` and `check_case_against_file` read only the file's JSON
header, in pure Python (no torch, no safetensors), so suites can be expanded
and checked in processes that never import torch. `load_file_inputs` loads the
tensors.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.core.errors import AttnbenchError

if TYPE_CHECKING:
    import torch

    from attnbench.core.case import Case

# safetensors dtype codes -> attnbench dtype names, and the bytes of one element.
FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                 "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
SHAPE_FIELDS = ("batch", "heads", "seq_len", "kv_heads", "kv_len", "head_dim", "v_head_dim")

# Each case field, the tensor and axis that hold it, and what that axis counts (for the sentences).
_FIELD_AXES = {
    "batch": ("q", 0, "sequences in its batch"),
    "heads": ("q", 1, "heads"),
    "seq_len": ("q", 2, "queries"),
    "kv_heads": ("k", 1, "key/value heads"),
    "kv_len": ("k", 2, "keys"),
    "head_dim": ("q", 3, "dims per head"),
    "v_head_dim": ("v", 3, "dims per value head"),
}

CREATE_HINT = ("create one with `attnbench capture ENTRY -o FOLDER` (see `attnbench capture --help`) or "
               "attnbench.measure.capture.capture_attention")


class InputFileError(AttnbenchError, ValueError):
    """A ``file:PATH`` inputs file that is missing, unreadable, corrupt, or disagrees with its case."""


def read_file_shapes(path: str | Path) -> dict[str, Any]:
    """The case fields a q/k/v safetensors file implies, read from its header alone.

    Returns ``batch, heads, seq_len, kv_heads, kv_len, head_dim, v_head_dim``
    (ints), ``dtype`` (the stored dtype of q, e.g. ``"bfloat16"``), ``layer``
    (int or None), ``causal`` (bool or None: None when the file does not say),
    ``scale`` (float or None) and ``metadata`` (the raw ``__metadata__``
    strings, ``{}`` when absent). Raises `InputFileError` (a ValueError) naming
    the file and what was expected when it is missing, corrupt, lacks q, k or v,
    or holds shapes that cannot be one attention call.
    """
    path = Path(path)
    header = _read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InputFileError(f"{path}: __metadata__ must map names to strings, got {metadata!r:.200}")
    missing = [name for name in ("q", "k", "v") if name not in header]
    if missing:
        raise InputFileError(f"{path} has no tensor named {', '.join(missing)}: expected tensors q (B, H, N, d), "
                             f"k (B, Hkv, M, d) and v (B, Hkv, M, dv); it holds {', '.join(sorted(header)) or 'none'}")
    shapes = {}
    for name in ("q", "k", "v"):
        entry = header[name]
        if entry["dtype"] not in FLOAT_DTYPES:
            raise InputFileError(f"{path}: tensor {name} is {entry['dtype']}, expected a floating dtype "
                                 f"({', '.join(FLOAT_DTYPES)})")
        shapes[name] = tuple(entry["shape"])
    check_attention_shapes(shapes["q"], shapes["k"], shapes["v"], where=str(path))
    (batch, heads, seq_len, head_dim), (_, kv_heads, kv_len, _), v_shape = shapes["q"], shapes["k"], shapes["v"]
    return {
        "batch": batch, "heads": heads, "seq_len": seq_len, "kv_heads": kv_heads, "kv_len": kv_len,
        "head_dim": head_dim, "v_head_dim": v_shape[3], "dtype": FLOAT_DTYPES[header["q"]["dtype"]],
        "layer": _metadata_number(metadata, "layer", path, int), "causal": _metadata_bool(metadata, "causal", path),
        "scale": _metadata_number(metadata, "scale", path), "metadata": dict(metadata),
    }


def check_attention_shapes(q: tuple, k: tuple, v: tuple, where: str) -> None:
    """InputFileError unless q (B, H, N, d), k (B, Hkv, M, d) and v (B, Hkv, M, dv) make one attention call."""
    for name, shape in (("q", q), ("k", k), ("v", v)):
        if len(shape) != 4 or not all(isinstance(n, int) and n > 0 for n in shape):
            expected = {"q": "(B, H, N, d)", "k": "(B, Hkv, M, d)", "v": "(B, Hkv, M, dv)"}[name]
            raise InputFileError(f"{where}: {name} has shape {tuple(shape)}, expected 4 positive dims {expected}")
    problems = []
    if not q[0] == k[0] == v[0]:
        problems.append(f"q, k and v must have one batch size, got {q[0]}, {k[0]} and {v[0]}")
    if k[1] != v[1]:
        problems.append(f"k and v must have the same number of heads, got {k[1]} and {v[1]}")
    if k[2] != v[2]:
        problems.append(f"k and v must have the same length, got {k[2]} and {v[2]}")
    if q[1] % k[1]:
        problems.append(f"q's {q[1]} heads must be a multiple of k's {k[1]} key/value heads (GQA)")
    if k[3] != q[3]:
        problems.append(f"k's head dim must equal q's, got {k[3]} and {q[3]}")
    if problems:
        raise InputFileError(f"{where}: q {tuple(q)}, k {tuple(k)}, v {tuple(v)} are not one attention call: "
                             + "; ".join(problems))


def check_case_against_file(case: Case) -> list[str]:
    """One sentence per shape field of `case` that disagrees with its ``file:PATH`` inputs; [] when all agree.

    For example ``"seq_len is 1024 but q in captured/layer00.safetensors has 512
    queries"``. Raises `InputFileError` when the case's inputs are not a file or
    the file cannot be read.
    """
    path = _case_path(case)
    shapes = read_file_shapes(path)
    problems = []
    for field, (tensor, _axis, counted) in _FIELD_AXES.items():
        wanted, stored = getattr(case, field), shapes[field]
        if wanted != stored:
            problems.append(f"{field} is {wanted} but {tensor} in {path} has {stored} {counted}")
    return problems


def load_file_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k and v of the case's ``file:PATH`` inputs, on the CPU, with the exact stored values.

    float16, bfloat16 and float32 tensors come back as float32 (upcasting is
    exact); float64 ones stay float64, so no stored value is ever rounded. The
    caller casts to the case's dtype and device. Raises `InputFileError` naming
    the file and every mismatch when the case's shapes disagree with it.
    """
    import torch
    from safetensors import safe_open

    path = _case_path(case)
    problems = check_case_against_file(case)
    if problems:
        raise InputFileError(f"case {case.label} does not match its inputs file: " + "; ".join(problems)
                             + ". Set these fields to the file's values (attnbench can read them from the file)")
    tensors = []
    with safe_open(str(path), framework="pt", device="cpu") as file:
        for name in ("q", "k", "v"):
            tensor = file.get_tensor(name)
            tensors.append(tensor if tensor.dtype == torch.float64 else tensor.to(torch.float32))
    q, k, v = tensors
    return q, k, v


def _case_path(case: Case) -> Path:
    from attnbench.kinds.inputs import inputs_of

    chosen = inputs_of(case)
    if not chosen.kind.reads_file:
        raise InputFileError(f"case {case.label} draws its inputs as {case.inputs!r}, not from a file:PATH")
    return Path(chosen.arg).expanduser()


def _read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, each tensor entry checked against the file's size."""
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise InputFileError(f"{path} is {len(prefix)} bytes, too short to be a safetensors file "
                                     "(expected an 8-byte header length, a JSON header, then the tensor data)")
            (length,) = struct.unpack("<Q", prefix)
            size = path.stat().st_size
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise InputFileError(f"{path} is not a safetensors file: its first 8 bytes give a header of "
                                     f"{length} bytes, but the file is {size} bytes "
                                     f"(expected a header of at most {min(size - 8, MAX_HEADER_BYTES)} bytes)")
            raw = file.read(length)
    except FileNotFoundError:
        raise InputFileError(f"inputs file {path} does not exist (looked in {path.resolve().parent}); "
                             + CREATE_HINT) from None
    except IsADirectoryError:
        raise InputFileError(f"inputs file {path} is a folder; name one of its .safetensors files, "
                             f"e.g. file:{path}/layer00.safetensors") from None
    except OSError as exc:
        raise InputFileError(f"inputs file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path} is not a safetensors file: its header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InputFileError(f"{path} is not a safetensors file: its header is a JSON "
                             f"{type(header).__name__}, expected an object of tensor entries")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        _check_entry(path, name, entry, data_bytes)
    return header


def _check_entry(path: Path, name: str, entry: Any, data_bytes: int) -> None:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise InputFileError(f"{where} is {entry!r:.200}, expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ELEMENT_BYTES:
        raise InputFileError(f"{where} has unknown dtype {dtype!r}, expected one of {', '.join(ELEMENT_BYTES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise InputFileError(f"{where} has shape {shape!r:.200}, expected a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(n, int) for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise InputFileError(f"{where} has data_offsets {offsets!r:.200}, expected [begin, end] with begin <= end")
    expected = math.prod(shape) * ELEMENT_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise InputFileError(f"{where}: shape {tuple(shape)} of {dtype} needs {expected} bytes, but its "
                             f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
    if offsets[1] > data_bytes:
        raise InputFileError(f"{where} ends at byte {offsets[1]} of the data, but the file holds only "
                             f"{data_bytes} bytes of data (truncated?)")


def _metadata_number(metadata: dict, key: str, path: Path, kind: type = float) -> float | int | None:
    """`key` of the file's metadata as a `kind` (int or float), None when absent; InputFileError naming it otherwise."""
    if key not in metadata:
        return None
    try:
        return kind(metadata[key])
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise InputFileError(f"{path}: __metadata__ {key} is {metadata[key]!r}, expected {noun}") from None


def _metadata_bool(metadata: dict, key: str, path: Path) -> bool | None:
    if key not in metadata:
        return None
    value = metadata[key].strip().lower()
    if value not in ("true", "false"):
        raise InputFileError(f"{path}: __metadata__ {key} is {metadata[key]!r}, expected 'true' or 'false'")
    return value == "true"

"""Small C kernels built once per machine: compiled on first use into attnbench's cache, then loaded.

A variant whose inner loop torch cannot express without materialising a
large tensor (a selective scan's per-(time, channel, state) decays) can ship
a C source beside its module and call `native_library(path)` in `prepare`.
The source is compiled with the system C compiler (``$CC``, else ``cc``,
else ``gcc``; the same compiler torch.compile's CPU backend needs) for this
machine's instruction set (``-O3 -march=native -fopenmp``: an OpenMP
parallel region runs on torch's own intra-op threads, since the library
binds to the libgomp torch has loaded), into
``<cache>/native/<stem>-<key>.so``, where the key hashes the source (with
the headers it includes by a quoted name from its own folder), the
compiler's version, the flags and the CPU's feature flags: a second worker, a
second run or a second variant loads the library in milliseconds, and an
edited source or another machine sharing the cache gets a build of its own.
The build goes to a temporary file renamed into place, so workers building at
once never load half a file.

Where there is no compiler, the build fails, or ``ATTNBENCH_NATIVE=0`` is
set, the result carries no library and says why, and the variant runs its
torch path instead (recording which ran in `Variant.execution`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from attnbench.measure.calibration import cache_dir

PRECISIONS = {"float32": "f32", "float64": "f64"}   # each source defines its kernels once per precision: name_f32, name_f64
DISABLE_VARIABLE = "ATTNBENCH_NATIVE"
COMPILE_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp")
BUILD_TIMEOUT_S = 120


@dataclass(frozen=True)
class NativeLibrary:
    """A C source built for this machine: the loaded library, or why there is none."""

    source: Path
    library: ctypes.CDLL | None
    path: Path | None = None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.library is not None

    def takes(self, dtype) -> bool:
        """Whether the library is built and defines its kernels for dtype (a torch dtype): float32 or float64."""
        return self.available and _precision_name(dtype) in PRECISIONS

    def kernel(self, name: str, dtype):
        """The kernel `name` for dtype's precision (``name_f32`` or ``name_f64``)."""
        return getattr(self.library, f"{name}_{PRECISIONS[_precision_name(dtype)]}")


def _precision_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def c_arguments(*values) -> list:
    """A native kernel's arguments for ctypes: a tensor as its data pointer (None as NULL), an int as an int64;
    anything else (a ctypes value or array) as it is."""
    def argument(value):
        if value is None:
            return ctypes.c_void_p(None)
        if hasattr(value, "data_ptr"):
            return ctypes.c_void_p(value.data_ptr())
        if isinstance(value, int):
            return ctypes.c_int64(value)
        return value
    return [argument(value) for value in values]


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


LOCAL_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _source_text(source: Path) -> bytes:
    """The source and every header it includes by a quoted name from beside it (recursively, each once), so an
    edited header rebuilds the library as an edited source does."""
    seen: set[Path] = set()
    parts: list[bytes] = []

    def read(path: Path) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        text = path.read_bytes()
        parts.append(path.name.encode() + b"\0" + text)
        for name in LOCAL_INCLUDE.findall(text):
            read(path.parent / name.decode())

    read(source)
    return b"\0".join(parts)


def _build_key(source_text: bytes, compiler: str) -> str:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    digest = hashlib.sha256(source_text)
    for part in (version.splitlines()[0] if version else compiler, " ".join(COMPILE_FLAGS),
                 platform.machine(), _cpu_flags()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def _build(source: Path, target: Path, compiler: str) -> str | None:
    """Compile `source` into `target`; the compiler's message when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *COMPILE_FLAGS, str(source), "-o", partial, "-lm"],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            return f"`{compiler}` failed on {source.name}: {done.stderr.strip()[-600:] or done.returncode}"
        os.replace(partial, target)
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`{compiler}` could not build {source.name}: {error}"
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


@cache
def native_library(source: Path) -> NativeLibrary:
    """`source` (a C file) built for this machine and loaded once per process, or why it cannot be."""
    import torch  # noqa: F401  (first: a library built with -fopenmp then shares torch's libgomp and its threads)

    source = Path(source)
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return NativeLibrary(source, None, reason=f"native kernels are turned off ({DISABLE_VARIABLE}=0)")
    compiler = _compiler()
    if compiler is None:
        return NativeLibrary(source, None, reason="no C compiler found ($CC, cc or gcc on PATH); install one "
                                                  "(e.g. the distribution's gcc) to build the native kernel")
    try:
        if not source.is_file():
            raise OSError(f"no such file: {source}")
        text = _source_text(source)
        target = cache_dir() / "native" / f"{source.stem}-{_build_key(text, compiler)}.so"
    except (OSError, subprocess.SubprocessError) as error:
        return NativeLibrary(source, None, reason=f"cannot read {source} or ask `{compiler}` its version: {error}")
    if not target.exists():
        failure = _build(source, target, compiler)
        if failure:
            return NativeLibrary(source, None, reason=failure)
    try:
        return NativeLibrary(source, ctypes.CDLL(str(target)), path=target)
    except OSError as error:
        return NativeLibrary(source, None, path=target, reason=f"cannot load {target}: {error}")

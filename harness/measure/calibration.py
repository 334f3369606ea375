"""Machine calibration: the device's measured matmul peak per dtype and its copy bandwidth.

Every cell's `peak_fraction` is its achieved FLOP/s over the calibrated matmul
peak of its dtype on its device, and the roofline uses the copy bandwidth.

- Matmul: square `torch.mm(a, b, out=c)`, n doubled from 256 until one call
  lasts `target_call_s` (or n reaches the device's cap), then one call per
  sample (CUDA: a batch of calls between two synchronizes) for
  `budget_s`; FLOP/s = 2·n³ / median seconds per call.
- Copy: `dst.copy_(src)` of a tensor far larger than the last-level cache
  (128 MiB on the CPU, 512 MiB on CUDA); bytes per second counts the bytes
  read plus the bytes written (2 × size), median of the samples.

A calibration is cached per machine and software fingerprint (host, CPU
model, torch version, threads, device name, this module's version) in
``$ATTNBENCH_CACHE_DIR`` or ``~/.cache/attnbench/calibration-<hash>.json``;
`recalibrate=True` measures again. On CUDA it is measured in a spawned
process, so the driver never holds a CUDA context.

The stored form (run.json's ``calibration``)::

    {"matmul_flops_per_s": {"float32": ...}, "copy_bytes_per_s": ...,
     "device": "cpu", "measured_at": "...", "cached": false,
     "fingerprint": "<hash>", "fingerprint_fields": {...},
     "matmul_size": {"float32": 2048}, "copy_bytes": ..., "seconds": ...}

With cells on several devices, the first device's calibration is the top
level and ``devices`` maps every device to its own; `peak_for` picks the
right one for a cell.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attnbench.core.machine import cpu_model
from attnbench.store import now_iso

CALIBRATION_VERSION = 1
MATMUL_START_N = 256
MATMUL_MAX_N = {"cpu": 2048, "cuda": 8192}
TARGET_CALL_S = {"cpu": 0.04, "cuda": 0.002}
MATMUL_BUDGET_S = {"cpu": 0.6, "cuda": 0.3}
COPY_BYTES = {"cpu": 128 << 20, "cuda": 512 << 20}
MIN_SAMPLES = 5
MAX_SAMPLES = 50


def cache_dir() -> Path:
    """Where calibrations are cached: $ATTNBENCH_CACHE_DIR, else $XDG_CACHE_HOME/attnbench, else ~/.cache/attnbench."""
    if os.environ.get("ATTNBENCH_CACHE_DIR"):
        return Path(os.environ["ATTNBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attnbench"


def fingerprint_fields(device: str, threads: int | None = None) -> dict[str, Any]:
    """What a calibration depends on: the machine, the software, the threads, the device."""
    import torch

    fields: dict[str, Any] = {
        "calibration_version": CALIBRATION_VERSION,
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        fields["device_name"] = torch.cuda.get_device_name()
        fields["cuda"] = torch.version.cuda
    else:
        fields["device_name"] = fields["cpu_model"]
    return fields


def fingerprint_hash(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(fingerprint: str, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"calibration-{fingerprint}.json"


def _device_calibration(calibration: dict | None, device: str) -> dict | None:
    """The part of a run's calibration that belongs to `device` (a per-device map, or the whole of it)."""
    if not calibration:
        return None
    per_device = (calibration.get("devices") or {}).get(device)
    if per_device is None and calibration.get("device", device) == device:
        per_device = calibration
    return per_device


def peak_for(calibration: dict | None, device: str, dtype: str) -> float | None:
    """The calibrated matmul FLOP/s for `dtype` on `device`, or None if the run has none."""
    per_device = _device_calibration(calibration, device)
    return None if per_device is None else (per_device.get("matmul_flops_per_s") or {}).get(dtype)


def bandwidth_for(calibration: dict | None, device: str) -> float | None:
    per_device = _device_calibration(calibration, device)
    return None if per_device is None else per_device.get("copy_bytes_per_s")


# ---------------------------------------------------------------- measuring


def _timer(device: str) -> Callable[[], None]:
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _sample_seconds(call: Callable[[], object], sync: Callable[[], None], calls: int, budget_s: float,
                    clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds per call, one sample per `calls` back-to-back calls, for `budget_s` (5 to 50 samples)."""
    samples: list[float] = []
    started = clock()
    while len(samples) < MAX_SAMPLES:
        sync()
        start = clock()
        for _ in range(calls):
            call()
        sync()
        samples.append((clock() - start) / calls)
        if len(samples) >= MIN_SAMPLES and clock() - started >= budget_s:
            break
    return samples


def _min_n(device: str, dtype: str) -> int:
    """Below this size a matmul is not at its peak; slow dtypes (fp16/bf16 on a CPU) may stop earlier."""
    if device == "cuda":
        return 4096
    return 1024 if dtype in ("float32", "float64") else MATMUL_START_N


def matmul_flops(n: int) -> int:
    """FLOPs of one n×n by n×n matmul (a multiply-add counts 2)."""
    return 2 * n ** 3


def measure_matmul(dtype: str, device: str = "cpu", budget_s: float | None = None,
                   max_n: int | None = None) -> dict[str, Any]:
    """The matmul peak of `dtype` on `device`: {'flops_per_s', 'n', 'samples_s', 'calls_per_sample'}."""
    import torch

    from attnbench.attention.tensors import torch_dtype

    sync = _timer(device)
    target = TARGET_CALL_S[device]
    max_n = max_n or MATMUL_MAX_N[device]
    generator = torch.Generator().manual_seed(0)
    n = MATMUL_START_N
    while True:
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype(dtype))
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=torch_dtype(dtype))
        out = torch.empty(n, n, device=device, dtype=torch_dtype(dtype))
        call = lambda a=a, b=b, out=out: torch.mm(a, b, out=out)  # noqa: E731
        call()
        sync()
        start = time.perf_counter()
        call()
        sync()
        once = time.perf_counter() - start
        if (once >= target and n >= _min_n(device, dtype)) or n >= max_n:
            break
        n *= 2
    calls = max(1, min(100, int(target / max(once, 1e-9))))
    samples = _sample_seconds(call, sync, calls, budget_s if budget_s is not None else MATMUL_BUDGET_S[device])
    median = statistics.median(samples)
    return {"flops_per_s": matmul_flops(n) / median, "n": n, "samples_s": samples, "calls_per_sample": calls}


def measure_copy(device: str = "cpu", nbytes: int | None = None, budget_s: float = 0.3) -> dict[str, Any]:
    """Copy bandwidth: (bytes read + bytes written) per second of `dst.copy_(src)`."""
    import torch

    nbytes = nbytes or COPY_BYTES[device]
    elements = nbytes // 4
    src = torch.ones(elements, dtype=torch.float32, device=device)
    dst = torch.zeros(elements, dtype=torch.float32, device=device)  # touched, so no page faults are timed
    sync = _timer(device)
    dst.copy_(src)
    sync()
    samples = _sample_seconds(lambda: dst.copy_(src), sync, 1, budget_s)
    moved = 2 * elements * 4
    return {"copy_bytes_per_s": moved / statistics.median(samples), "copy_bytes": moved, "samples_s": samples}


def measure_device(device: str, dtypes: Iterable[str], threads: int | None = None) -> dict[str, Any]:
    """A fresh calibration of `device` for `dtypes` (runs in this process)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    fields = fingerprint_fields(device, threads)
    load_before = _load_average()
    matmul = {dtype: measure_matmul(dtype, device) for dtype in dtypes}
    copy = measure_copy(device)
    load = max(v for v in (load_before, _load_average(), 0.0) if v is not None)
    warnings = []
    if device == "cpu" and load > (os.cpu_count() or 1):
        warnings.append(f"calibrated while the 1-minute load average ({load:.1f}) exceeded the "
                        f"{os.cpu_count()} cores: the peak is likely underestimated; rerun with --recalibrate "
                        "on a quiet machine")
    return {
        "load_avg_1m": load,
        "warnings": warnings,
        "matmul_flops_per_s": {dtype: m["flops_per_s"] for dtype, m in matmul.items()},
        "matmul_size": {dtype: m["n"] for dtype, m in matmul.items()},
        "copy_bytes_per_s": copy["copy_bytes_per_s"],
        "copy_bytes": copy["copy_bytes"],
        "device": device,
        "measured_at": now_iso(),
        "cached": False,
        "fingerprint": fingerprint_hash(fields),
        "fingerprint_fields": fields,
        "seconds": time.perf_counter() - started,
        "method": "matmul: median of torch.mm(a, b, out=c) on square n×n, 2n³ FLOPs per call; "
                  "copy: median of dst.copy_(src), bytes read + written",
    }


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _measure_in_subprocess(device: str, dtypes: list[str], threads: int | None) -> dict[str, Any]:
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure_device, device, dtypes, threads).result()


def calibrate(device: str, dtypes: Iterable[str], *, recalibrate: bool = False, threads: int | None = None,
              directory: Path | None = None, isolated: bool | None = None,
              measure: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The calibration of `device` for `dtypes`: from the cache when it has them all, else measured.

    A cached calibration missing some dtypes gets only those measured and is
    written back. `isolated` (default: on CUDA) measures in a spawned process.
A calibration measured while the load average exceeded the cores carries a
warning and is not cached, so the next run measures again.
    """
    dtypes = sorted(set(dtypes))
    fields = fingerprint_fields(device, threads)
    fingerprint = fingerprint_hash(fields)
    path = cache_path(fingerprint, directory)
    cached = None if recalibrate else _read_cache(path, fingerprint)
    if cached is not None and all(d in cached.get("matmul_flops_per_s", {}) for d in dtypes):
        return {**cached, "cached": True, "cache_path": str(path)}
    missing = dtypes if cached is None else [d for d in dtypes if d not in cached["matmul_flops_per_s"]]
    if measure is None:
        isolated = device == "cuda" if isolated is None else isolated
        measure = (lambda dev, dts, thr: _measure_in_subprocess(dev, dts, thr)) if isolated else measure_device
    fresh = measure(device, missing, threads)
    if cached is not None:
        fresh["matmul_flops_per_s"] = {**cached["matmul_flops_per_s"], **fresh["matmul_flops_per_s"]}
        fresh["matmul_size"] = {**cached.get("matmul_size", {}), **fresh.get("matmul_size", {})}
    fresh["cached"] = False
    if fresh.get("warnings"):
        # Measured on an overloaded machine: good enough for this run, not for every later one.
        return {**fresh, "cache_path": None}
    _write_cache(path, fresh)
    return {**fresh, "cache_path": str(path)}


def _read_cache(path: Path, fingerprint: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    if not isinstance(data.get("matmul_flops_per_s"), dict) or not data.get("copy_bytes_per_s"):
        return None
    return data


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
        temporary.replace(path)
    except OSError:
        pass  # an unwritable cache only costs a recalibration next time


def devices_and_dtypes(cases) -> dict[str, list[str]]:
    """Which dtypes each device of a list of cases needs calibrated, in first-seen device order."""
    wanted: dict[str, set[str]] = {}
    for case in cases:
        wanted.setdefault(case.device, set()).add(case.dtype)
    return {device: sorted(dtypes) for device, dtypes in wanted.items()}


def calibrate_cases(cases, *, recalibrate: bool = False, threads: int | None = None,
                    directory: Path | None = None, **options) -> dict[str, Any]:
    """The run's calibration for every device and dtype its cases use (see the module docstring)."""
    wanted = devices_and_dtypes(cases)
    if not wanted:
        return {}
    per_device = {device: calibrate(device, dtypes, recalibrate=recalibrate, threads=threads,
                                    directory=directory, **options)
                  for device, dtypes in wanted.items()}
    first = dict(next(iter(per_device.values())))
    if len(per_device) > 1:
        first["devices"] = per_device
    return first


def describe(calibration: dict[str, Any]) -> str:
    """One line per device: 'calibration (cpu, cached): float32 35.8 GFLOP/s; copy 7.5 GB/s'."""
    lines = []
    per_device = calibration.get("devices") or ({calibration["device"]: calibration} if calibration else {})
    for device, data in per_device.items():
        peaks = "; ".join(f"{dtype} {value / 1e9:.1f} GFLOP/s"
                          for dtype, value in sorted(data.get("matmul_flops_per_s", {}).items()))
        how = "cached" if data.get("cached") else f"measured in {data.get('seconds', 0):.1f} s"
        lines.append(f"calibration ({device}, {how}): {peaks}; copy {data.get('copy_bytes_per_s', 0) / 1e9:.1f} GB/s")
        lines.extend(f"  warning: {text}" for text in data.get("warnings", ()))
    return "\n".join(lines)

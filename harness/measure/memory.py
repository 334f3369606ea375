"""Peak memory of one call, above what was allocated before it.

CPU on Linux: writing 5 to /proc/self/clear_refs resets the process's
high-water mark (VmHWM) to its current resident size, so VmHWM after the call
minus VmRSS before it is the exact peak the call added. Elsewhere: psutil
sampling of RSS in a thread (a lower bound). CUDA: the caching allocator's
`max_memory_allocated` after `reset_peak_memory_stats`.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class PeakMeasurement:
    peak_bytes: int
    method: str


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in {STATUS}")


def hwm_reset_works() -> bool:
    """True when this kernel lets the process reset its VmHWM."""
    try:
        CLEAR_REFS.write_text("5")
        return _status_kib("VmHWM") <= _status_kib("VmRSS") + 64
    except OSError:
        return False


def release_free_heap() -> bool:
    """Give freed heap pages back to the kernel (glibc's malloc_trim), so RSS counts live memory only.

    Without it, memory an earlier call freed stays resident, the next call
    reuses it without raising RSS, and its peak reads as zero.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0)) or True
    except (OSError, AttributeError):
        return False


def cpu_peak_bytes(fn: Callable[[], object]) -> PeakMeasurement:
    """Peak resident bytes `fn` adds to the process (its result is dropped after the peak is read)."""
    gc.collect()
    release_free_heap()
    if hwm_reset_works():
        CLEAR_REFS.write_text("5")
        baseline = _status_kib("VmRSS")
        result = fn()
        peak = _status_kib("VmHWM")
        del result
        return PeakMeasurement(max(0, (peak - baseline) * 1024), "linux-vmhwm")
    return _sampled_peak(fn)


def _sampled_peak(fn: Callable[[], object]) -> PeakMeasurement:
    import psutil

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        peak = max(peak, process.memory_info().rss)
    finally:
        done.set()
        sampler.join()
    del result
    return PeakMeasurement(max(0, peak - baseline), "psutil-sampled-rss (a lower bound)")


def cuda_peak_bytes(fn: Callable[[], object], device=None) -> PeakMeasurement:
    """Peak bytes the CUDA caching allocator handed out during `fn`, above what was allocated before."""
    import torch

    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return PeakMeasurement(max(0, peak - baseline), "cuda-max-memory-allocated")

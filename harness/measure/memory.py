"""Peak memory of one call, above what was allocated before it.

CPU, the primary figure (`cpu_allocated_peak_bytes`): the peak of bytes live
in PyTorch's CPU allocator during the call, from the allocation and free
events `torch.profiler` records with ``profile_memory=True`` (every tensor
and every scratch buffer a kernel takes from the allocator, in any thread).
It counts what the call allocated, not what the C library keeps resident,
so it repeats exactly; memory a library takes from malloc directly (oneDNN
or BLAS scratch) is not seen.

CPU, the second figure (`cpu_peak_bytes`): on Linux writing 5 to
/proc/self/clear_refs resets the high-water mark (VmHWM) to the current
resident size, so VmHWM after the call minus VmRSS before it is the resident
peak the call added, which includes freed heap pages the allocator kept and
varies with heap layout. Elsewhere psutil sampling of RSS (a lower bound).
CUDA: the caching allocator's `max_memory_allocated` after
`reset_peak_memory_stats`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
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


def cpu_allocated_peak_bytes(fn: Callable[[], object]) -> PeakMeasurement:
    """Peak bytes live in PyTorch's CPU allocator during `fn`, above what was live before it.

    The profiler's memory events (signed sizes in time order) are summed; the
    running maximum is the peak. Its start/stop lines on stderr are dropped.
    """
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == _cpu_device_type())
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return PeakMeasurement(peak, "torch-profiler-cpu-allocated")


def _cpu_device_type():
    from torch.autograd import DeviceType

    return DeviceType.CPU


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null inside the block (the profiler's C++ start/stop log lines)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


# A cell is warned of a leak when memory kept after its calls grows by more than both of these.
LEAK_MIN_TOTAL_BYTES = 16 << 20
LEAK_MIN_BYTES_PER_CALL = 1 << 20
# ... and of an optimistic memory model when its peak exceeds the model by this factor and this many bytes.
MODEL_WARN_FACTOR = 4.0
MODEL_WARN_MIN_EXCESS_BYTES = 64 << 20


def live_bytes(device: str) -> int | None:
    """Memory the process holds now: resident bytes after releasing free heap pages (CPU), or bytes
    the CUDA caching allocator has handed out (CUDA); None where neither can be read."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return int(torch.cuda.memory_allocated())
    release_free_heap()
    try:
        return _status_kib("VmRSS") * 1024
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def leak_warning(before: int | None, after: int | None, calls: int) -> str | None:
    """A warning when memory kept across `calls` calls grew past the leak thresholds, else None."""
    if before is None or after is None or calls <= 0:
        return None
    growth = after - before
    if growth <= LEAK_MIN_TOTAL_BYTES or growth / calls <= LEAK_MIN_BYTES_PER_CALL:
        return None
    return (f"leak: memory kept after the calls grew by {growth / 2**20:.0f} MiB over {calls} calls "
            f"({growth / calls / 2**20:.1f} MiB per call); the forward keeps what it allocates")


def model_warning(peak_bytes: int | None, predicted_bytes: int | None) -> str | None:
    """A warning when the measured peak is far above the variant's memory model, else None."""
    if not peak_bytes or not predicted_bytes:
        return None
    if peak_bytes <= MODEL_WARN_FACTOR * predicted_bytes or peak_bytes - predicted_bytes <= MODEL_WARN_MIN_EXCESS_BYTES:
        return None
    return (f"peak memory {peak_bytes / 2**20:.0f} MiB is {peak_bytes / predicted_bytes:.1f}x the memory model's "
            f"{predicted_bytes / 2**20:.0f} MiB: the model is wrong, or the forward keeps memory it should free")

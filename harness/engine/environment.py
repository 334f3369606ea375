"""The environment fingerprint stored with every run: software, hardware and threads."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from attnbench.core.machine import cpu_model, package_version

# glibc's malloc hands every block of 32 MiB or more back to the kernel when it is freed, so a
# variant whose tensors pass that size pays fresh page faults on every call, which grows its time
# faster than its work does. A worker keeps freed memory for reuse, as PyTorch's CUDA caching
# allocator and the jemalloc/tcmalloc setups recommended for CPU inference do. Peak memory is
# still exact: the memory pass releases free heap pages (malloc_trim) before it measures.
# Variables the user has already set are left alone.
CPU_ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(8 << 30),
    "MALLOC_TOP_PAD_": str(512 << 20),
}

OPTIONAL_PACKAGES = ("xformers", "flash-attn", "triton", "ray", "numpy", "pandas", "pytest-benchmark")


def harness_commit() -> str | None:
    """The git commit of the harness source, if it runs from a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect_environment() -> dict[str, Any]:
    """Versions, device names, CPU model and threads of this machine (imports torch)."""
    import psutil
    import torch

    from attnbench.engine.compile_cache import compile_cache_dir

    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "torch_threads": torch.get_num_threads(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "attnbench": package_version("attnbench"),
        "harness_commit": harness_commit(),
        "packages": {name: package_version(name) for name in OPTIONAL_PACKAGES},
        "cuda_available": torch.cuda.is_available(),
        "worker_malloc_env": worker_malloc_environment(),
        "compile_cache_dir": str(compile_cache_dir()),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu_name": props.name,
            "gpu_count": torch.cuda.device_count(),
            "gpu_memory_bytes": props.total_memory,
            "gpu_capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
            "nvidia_driver": nvidia_driver_version(),
        })
    return env


def worker_malloc_environment() -> dict[str, str]:
    """The glibc malloc settings worker processes run with (the harness's defaults unless the user set them)."""
    return {name: os.environ.get(name, value) for name, value in CPU_ALLOCATOR_ENV.items()}


def nvidia_driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else version
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or no driver: a note, not an error
        return None

"""What machine this is, and what is installed on it, as the environment fingerprint, the calibration
cache and the reports name them."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path


def package_version(name: str) -> str | None:
    """The installed version of distribution `name` ('attnbench', 'torch'), or None if not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

"""The persistent compile cache: every torch.compile in a worker reads and writes one folder.

Inductor keeps its compiled graphs (FX graph cache) and AOTAutograd's
results on disk under ``TORCHINDUCTOR_CACHE_DIR``; pointed at a folder under
attnbench's cache (``<cache>/inductor``, beside the calibrations), a second
worker or a second run of the same shape loads the kernel instead of
compiling it (FlexAttention, N = 1024 causal, here: 22.8 s of setup cold,
4.6 s warm, of which 3.0 s is torch.compile loading and checking its cache).
A folder the user set is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from attnbench.measure.calibration import cache_dir

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir() -> Path:
    """The folder torch.compile caches into: $TORCHINDUCTOR_CACHE_DIR if set, else <attnbench cache>/inductor."""
    return Path(os.environ.get(CACHE_VARIABLE) or cache_dir() / "inductor")


def compile_cache_environment() -> dict[str, str]:
    """The variables a worker starts with so that its compiles persist across workers and runs."""
    return {CACHE_VARIABLE: str(compile_cache_dir())}

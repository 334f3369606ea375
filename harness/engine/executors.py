"""Executors run cells and stream back results; the driver alone writes the store.

An executor has `map(cases, settings, on_start=None, on_progress=None)`, which
takes an iterator of cases (pulled lazily, so the driver can still skip cells
based on earlier results) and yields `(case, result)` pairs as cells finish,
calling `on_start(case)` before a cell and `on_progress(case, message)` for a
quality cell's training steps where it can hear them (the Ray executor does
not); `available_memory(device)`; and `close()`.
"""

from __future__ import annotations

from attnbench.core.errors import AttnbenchError
from attnbench.engine.local_executor import LocalExecutor


def make_executor(name: str, **options):
    """The executor called `name` ('local' or 'ray')."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        try:  # Ray is an optional extra: imported only when asked for
            from attnbench.engine.ray_executor import RayExecutor
        except ImportError as exc:
            raise AttnbenchError(f"--executor ray needs Ray: pip install 'attnbench[ray]' ({exc})") from None
        return RayExecutor(**options)
    raise AttnbenchError(f"unknown executor {name!r}: expected 'local' or 'ray'")

"""Where a cell's setup time goes: torch.compile, the rest of `prepare`, and the first call.

`setup_s` is `prepare` plus the first call, kept out of the timed region.
`SetupClock` splits it with torch's own compile timer (dynamo's
``_compile.compile_inner`` total, which covers tracing, AOTAutograd, Inductor
and loading from the compile cache): ``compile_s`` is every compile during
setup, ``prepare_s`` is the rest of `prepare` (weights, masks, block masks,
layout copies) and ``first_call_s`` the first call without its compiles.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass

COMPILE_TIMER = "_compile.compile_inner"
# What torch.compile imports on its first call, whatever it compiles (FlexAttention's module included).
COMPILE_STACK_MODULES = (
    "torch._dynamo",
    "torch._functorch._aot_autograd.autograd_cache",
    "torch._inductor.compile_fx",
    "torch._inductor.codecache",
    "torch._inductor.cpp_builder",
    "torch.nn.attention.flex_attention",
)


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (0 when it never ran)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return 0.0
    return float(sum(getattr(utils, "compilation_time_metrics", {}).get(COMPILE_TIMER, ())))


_compile_stack_warm = False


def warm_compile_stack() -> float:
    """Import torch.compile's stack and run Inductor's CPU ISA probe: the seconds it took (0 when done already)."""
    global _compile_stack_warm
    if _compile_stack_warm:
        return 0.0
    start = time.perf_counter()
    for module in COMPILE_STACK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:                                   # an older torch: its first compile imports what it has
            continue
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        pass
    else:
        pick_vec_isa()                                        # Inductor caches the answer for the process
    _compile_stack_warm = True
    return time.perf_counter() - start


@dataclass(frozen=True)
class SetupParts:
    """setup_s in parts, seconds: compile_s + prepare_s + first_call_s."""

    compile_s: float
    prepare_s: float
    first_call_s: float

    @property
    def total_s(self) -> float:
        return self.compile_s + self.prepare_s + self.first_call_s

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class SetupClock:
    """Started before `prepare`; `prepared()` after it; `parts()` after the first call."""

    def __init__(self) -> None:
        self._start = (time.perf_counter(), compile_seconds())
        self._prepared = self._start

    def prepared(self) -> None:
        self._prepared = (time.perf_counter(), compile_seconds())

    def parts(self) -> SetupParts:
        end = (time.perf_counter(), compile_seconds())
        (t0, c0), (t1, c1), (t2, c2) = self._start, self._prepared, end
        compile_prepare, compile_call = max(c1 - c0, 0.0), max(c2 - c1, 0.0)
        return SetupParts(compile_s=compile_prepare + compile_call,
                          prepare_s=max(t1 - t0 - compile_prepare, 0.0),
                          first_call_s=max(t2 - t1 - compile_call, 0.0))

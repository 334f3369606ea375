"""Throw-away plugin distributions for tests: a real dist-info with entry_points.txt on a path.

`write_distribution` makes a folder that, put on sys.path (or PYTHONPATH),
is found by importlib.metadata exactly like an installed package.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

# The base class of the test plugins: a plugin module's text is its own imports, this, then its variants.
EXACT_SOFTMAX = '''
from attnbench import Variant, attention_flops, softmax_attention


class ExactSoftmax(Variant):
    """Exact softmax attention on the CPU: its reference, its FLOPs and its output; a plugin adds a name and a forward."""

    computes = "softmax_attention"
    devices = ("cpu",)

    def reference(self, case, inputs, rows=None):
        return softmax_attention(*inputs.tensors(), causal=case.causal, rows=rows)

    def flops(self, case):
        return attention_flops(case)

    def _exact(self, inputs, case):
        import torch.nn.functional as F
        return F.scaled_dot_product_attention(inputs.q, inputs.k, inputs.v, is_causal=case.causal)
'''

FAULTY_MODULE = '''
"""Variants that misbehave on purpose, for fault tests."""
import ctypes
import os
import time

import torch
''' + EXACT_SOFTMAX + '''

class _Base(ExactSoftmax):
    """Each fault's forward is its `call`."""

    family = "test-faults"

    def prepare(self, case, inputs):
        return lambda: self.call(inputs, case)


def _raise_memory_error():
    raise MemoryError("pretend allocation of 10 TiB failed")


def _allocate_forever():
    hoard = []
    while True:
        hoard.append(torch.ones(64 * 2**20, dtype=torch.uint8))


def _crashing(class_name, name, crash):
    """A fault whose forward calls `crash()` and never returns an output."""
    return type(class_name, (_Base,), {"name": name, "call": lambda self, inputs, case: crash()})


Segfault = _crashing("Segfault", "fault-segfault", lambda: ctypes.string_at(0))
Abort = _crashing("Abort", "fault-abort", os.abort)
Hang = _crashing("Hang", "fault-hang", lambda: time.sleep(3600))
RaisesMemoryError = _crashing("RaisesMemoryError", "fault-memoryerror", _raise_memory_error)
AllocatesForever = _crashing("AllocatesForever", "fault-allocate", _allocate_forever)


_KEPT = []


class Leaks(_Base):
    """Keeps 8 MiB per call, as a cache that is never emptied would."""

    name = "fault-leak"

    def memory_model(self, case):
        return 1 << 20

    def call(self, inputs, case):
        _KEPT.append(torch.ones(8 * 2**20, dtype=torch.uint8))
        return self._exact(inputs, case)


class Bloats(_Base):
    """Allocates (and frees) 160 MiB per call while its memory model says 1 MiB."""

    name = "fault-bloat"

    def memory_model(self, case):
        return 1 << 20

    def call(self, inputs, case):
        scratch = torch.ones(160 * 2**20, dtype=torch.uint8)
        return self._exact(inputs, case) + 0 * float(scratch[-1])


class ReturnsNaN(_Base):
    name = "fault-nan"

    def call(self, inputs, case):
        return self._exact(inputs, case) * float("nan")


class WrongShape(_Base):
    name = "fault-shape"

    def call(self, inputs, case):
        return self._exact(inputs, case)[..., :-1]


class NonDeterministic(_Base):
    name = "fault-nondeterministic"

    def call(self, inputs, case):
        out = self._exact(inputs, case)
        return out + torch.rand_like(out) * 1e-3


class OnePercentHigh(_Base):
    """Exact softmax attention times 1.01: finite, deterministic, and 1% wrong (rel_l2 1e-2)."""

    name = "fault-scaled"

    def call(self, inputs, case):
        return self._exact(inputs, case) * 1.01


class Good(_Base):
    name = "fault-good"

    def call(self, inputs, case):
        return self._exact(inputs, case)
'''

FAULTY_ENTRY_POINTS = {
    "fault-segfault": "attnbench_faulty:Segfault",
    "fault-abort": "attnbench_faulty:Abort",
    "fault-hang": "attnbench_faulty:Hang",
    "fault-memoryerror": "attnbench_faulty:RaisesMemoryError",
    "fault-allocate": "attnbench_faulty:AllocatesForever",
    "fault-nan": "attnbench_faulty:ReturnsNaN",
    "fault-leak": "attnbench_faulty:Leaks",
    "fault-bloat": "attnbench_faulty:Bloats",
    "fault-shape": "attnbench_faulty:WrongShape",
    "fault-nondeterministic": "attnbench_faulty:NonDeterministic",
    "fault-scaled": "attnbench_faulty:OnePercentHigh",
    "fault-good": "attnbench_faulty:Good",
}


def write_distribution(site: Path, name: str, module_name: str, module_source: str,
                       entry_points: dict[str, str], group: str = "attnbench.variants") -> Path:
    """Write `module_name`.py and a `name`-0.1.dist-info into `site`; return `site`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module_name}.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
    dist_info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = [f"[{group}]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return site


def write_faulty_plugins(site: Path) -> Path:
    return write_distribution(site, "attnbench-faulty", "attnbench_faulty", FAULTY_MODULE, FAULTY_ENTRY_POINTS)

"""`planted-slow`: a plugin whose slowdown is known, for tests and benchmarks of the gates.

It computes exact softmax attention REPEAT times per call (REPEAT from
$ATTNBENCH_PLANTED_REPEAT, default 5), so 6 against 4 is a real 50%
slowdown of one and the same variant (same case ids); with
$ATTNBENCH_PLANTED_SPIN=0.2 it also busy-waits 0.2x its own compute time
(timed in `prepare`) on every call: a true 20% slowdown.
"""

from __future__ import annotations

from pathlib import Path

from plugin_fixtures import EXACT_SOFTMAX, write_distribution

PLANTED_MODULE = '''
import os
''' + EXACT_SOFTMAX + '''

class PlantedSlow(ExactSoftmax):
    name = "planted-slow"
    family = "test-planted"

    def prepare(self, case, inputs):
        import statistics
        import time

        import torch.nn.functional as F
        repeat = int(os.environ.get("ATTNBENCH_PLANTED_REPEAT", "5"))
        spin = float(os.environ.get("ATTNBENCH_PLANTED_SPIN", "0"))
        q, k, v = inputs.tensors()

        def compute():
            for _ in range(repeat - 1):
                F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)
            return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)

        def seconds():
            start = time.perf_counter()
            compute()
            return time.perf_counter() - start

        compute()
        spin_s = spin * statistics.median(seconds() for _ in range(7))  # SPIN × its own compute, busy-waited

        def forward():
            out = compute()
            until = time.perf_counter() + spin_s
            while time.perf_counter() < until:
                pass
            return out
        return forward
'''


def write_planted_plugin(site: Path) -> Path:
    """Install `planted-slow` as a distribution in `site` (put it on PYTHONPATH); return `site`."""
    return write_distribution(site, "planted-plugin", "attnbench_planted", PLANTED_MODULE,
                              {"planted-slow": "attnbench_planted:PlantedSlow"})

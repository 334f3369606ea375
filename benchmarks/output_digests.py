"""Print a SHA-256 digest of every quick-suite kernel cell's output and float64 reference.

Run before and after a change to show which variants compute exactly what they did:
    python output_digests.py [SUITE] > digests.txt
"""
import hashlib
import sys

import torch

from attnbench.core.registry import default_registry
from attnbench.measure.inputs import make_inputs, upcast
from attnbench.plan.suite import expand, load_suite


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def main() -> None:
    registry = default_registry()
    suite = load_suite(sys.argv[1] if len(sys.argv) > 1 else "quick")
    torch.set_num_threads(2)
    for case in expand(suite, registry):
        variant = registry.get(case.variant)
        if variant.unsupported_reasons(case):
            continue
        inputs = make_inputs(case)
        out = variant.prepare(case, inputs)()
        inputs64 = upcast(inputs)
        rows = None
        if variant.reference_rows and case.seq_len * case.kv_len > 1 << 20:
            rows = torch.cat([torch.arange(64), torch.arange(case.seq_len - 64, case.seq_len)])
        with torch.no_grad():
            ref = variant.reference(case, inputs64, rows) if rows is not None else variant.reference(case, inputs64)
        print(case.variant, case.params, case.seq_len, case.kv_heads, digest(out), digest(ref), flush=True)


if __name__ == "__main__":
    main()

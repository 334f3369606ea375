"""A leaky plugin before naive: naive's peak with and without it, what each worker holds, the restart cost.

    flock /tmp/bench.lock .venv/bin/python benchmarks/leak_containment.py

Uses the planted `fault-leak` plugin of tests/plugin_fixtures.py (8 MiB kept
per call, its own distribution), installed into a temporary folder.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from plugin_fixtures import write_faulty_plugins  # noqa: E402

from attnbench.engine.sweep import run_suite  # noqa: E402
from attnbench.plan.suite import parse_suite  # noqa: E402
from attnbench.store import load_run  # noqa: E402

SUITE = """
[suite]
name = "leak"
variants = [{names}]
[defaults]
heads = 8
head_dim = 64
[sweep]
seq_len = [1024]
[measure]
warmup_s = 0.1
budget_s = 0.5
accuracy = false
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(write_faulty_plugins(Path(tmp) / "site")))
        from attnbench.core.registry import load_registry

        registry = load_registry()
        for label, names in (("with fault-leak first", '"fault-leak", "naive"'), ("naive alone", '"naive"')):
            outcome = run_suite(parse_suite(SUITE.format(names=names), "leak.toml"), registry, Path(tmp) / "r")
            for cell in load_run(outcome.run_path).cells:
                result = cell.result
                print(f"{label:22} {cell.case['variant']:10} peak {result.memory.peak_bytes_fwd / 2**20:8.1f} MiB "
                      f"(resident {result.memory.resident_bytes_fwd / 2**20:7.1f} MiB), worker holds "
                      f"{result.telemetry['worker_live_bytes_after'] / 2**20:7.1f} MiB after its calls, pid "
                      f"{result.worker['pid']}; warnings: {[w[:60] for w in result.warnings if w.startswith('leak')]}")
            restarts = json.loads((outcome.run_path / "run.json").read_text())["settings"]["worker_restarts"]
            print(f"{label:22} restarts: {restarts['count']}, {restarts['start_s_total']:.2f} s to start the new "
                  f"worker(s); {[r['reason'] for r in restarts['restarts']]}")


if __name__ == "__main__":
    main()

"""Wall time of a suite with `--executor ray` against the local executor, and what Ray adds at start-up.

    .venv/bin/python benchmarks/bench_ray.py [--suite quick] [--repeat 1] [--num-cpus N]

Runs `attnbench run SUITE --executor local|ray --no-report` as subprocesses,
alternating local and ray `--repeat` times, into a temporary results folder,
and prints each run's wall time and cell count. Then, in this process, times
the parts of Ray's start-up: `ray.init` of a fresh local instance, the first
actor with its attnbench worker process ready, and `ray.shutdown`; and, for
scale, the local executor's worker start. Needs Ray (pip install 'attnbench[ray]').
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(suite: str, executor: str, results: Path) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "attnbench.cli", "run", suite, "--executor", executor,
                           "--results", str(results), "--no-report"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{executor} run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    from attnbench.store import list_runs

    newest = list_runs(results)[0]
    return wall, len(newest.cells), newest.status


def startup_parts(num_cpus: int | None) -> dict[str, float]:
    import ray

    from attnbench.engine.local_executor import LocalExecutor
    from attnbench.engine.ray_executor import RayExecutor
    from attnbench.engine.worker import Worker, WorkerOptions

    parts = {}
    started = time.perf_counter()
    worker = Worker(WorkerOptions(device="cpu"))
    worker.start()
    parts["local worker start (spawn, import torch)"] = time.perf_counter() - started
    worker.stop()
    LocalExecutor().close()

    executor = RayExecutor(num_cpus=num_cpus)
    started = time.perf_counter()
    executor._connect()
    parts["ray.init (fresh local instance)"] = time.perf_counter() - started
    started = time.perf_counter()
    (slot,) = executor._pool("cpu")[:1]
    ray.get(slot.actor.node.remote())                     # the actor is up and has its node fingerprint
    parts["first actor ready (with node fingerprint)"] = time.perf_counter() - started
    started = time.perf_counter()
    executor.close()
    parts["close (actors stopped, ray.shutdown)"] = time.perf_counter() - started
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick", help="suite name or path (default quick)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per executor, alternating (default 1)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            for executor in ("local", "ray"):
                wall, cells, status = timed_run(args.suite, executor, Path(folder) / executor)
                walls[executor].append(wall)
                print(f"{executor:>5}: {wall:7.1f} s wall, {cells} cells, {status}", flush=True)
    print(f"\nsuite {args.suite!r}, {os.cpu_count()} CPUs, 1-minute load {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    local, ray_ = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"median wall: local {local:.1f} s, ray {ray_:.1f} s, ray - local {ray_ - local:+.1f} s "
          f"({ray_ / local:.2f}x)")
    print("\nstart-up, in this process:")
    for name, seconds in startup_parts(args.num_cpus).items():
        print(f"  {name:<45} {seconds:6.2f} s")


if __name__ == "__main__":
    main()

"""The Ray executor: cells fan out over a Ray cluster; the driver alone writes the store.

``attnbench run SUITE --executor ray [--address ADDR]``. Each cell runs in a
Ray actor that holds one `attnbench.engine.worker.Worker`, so every cell still runs in
its own spawned, isolated worker process: a segfault or a hang in a variant
becomes a stored ``crashed`` or ``timeout`` result, exactly as with the local
executor, and the actor lives on. Results stream back to the driver as cells
finish; `attnbench.engine.sweep` commits each one before it asks for the next cell, so
``--resume`` and durability hold as they do locally.

Slots: on CUDA one actor per GPU in the cluster (``num_gpus=1``, Ray sets
``CUDA_VISIBLE_DEVICES``); on the CPU `cpu_slots_per_node` actors per node
(default 1), each reserving its share of the node's CPUs (``num_cpus``) and
giving the worker that many torch threads, so a CPU timing is not disturbed
by another cell on the same cores. At most one cell per actor is in flight;
the next case is pulled from the driver's lazy plan only when a slot frees,
so the driver's out-of-memory skips still see earlier results.

Every result carries the fingerprint of the node that measured it
(`attnbench.engine.environment.collect_environment` run on that node, once per actor) in
``result.worker["node"]``, with Ray's node id and the GPU ids it was given.

Plugins: the actors import variants from their own environment. The driver's
``ATTNBENCH_PLUGINS`` and ``PYTHONPATH`` are passed to them (Ray
``runtime_env`` env_vars), so a restricted or path-installed plugin set is
the same on every node; the packages themselves must be installed there.

Ray is the optional extra ``attnbench[ray]``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import ray

from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.result import Result
from attnbench.core.settings import MeasureSettings
from attnbench.engine.environment import collect_environment
from attnbench.engine.worker import Worker, WorkerOptions, run_in_fresh_processes

PROPAGATED_ENV = ("ATTNBENCH_PLUGINS", "PYTHONPATH")
ACTOR_RETRIES = 1


class CellRunner:
    """A Ray actor holding one attnbench worker process on its node (one slot)."""

    def __init__(self, worker_options: dict[str, Any]) -> None:
        self._options = WorkerOptions(**worker_options)
        self._worker = Worker(self._options)
        self._node: dict[str, Any] | None = None

    def node(self) -> dict[str, Any]:
        """This node's environment fingerprint, collected once per actor."""
        if self._node is None:
            context = ray.get_runtime_context()
            self._node = {**collect_environment(), "ray_node_id": context.get_node_id(),
                          "ray_node_ip": ray.util.get_node_ip_address(),
                          "ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()],
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        return self._node

    def memory_available(self) -> int | None:
        if self._options.device == "cpu":
            import psutil

            return psutil.virtual_memory().available
        if not self._worker.device_info:
            self._worker.start()
        return self._worker.device_info.get("memory_available_bytes")

    def run(self, case_data: dict[str, Any], settings_data: dict[str, Any]) -> dict[str, Any]:
        """Measure one cell in the worker process; never raises for what the cell does."""
        case = Case.from_dict(case_data)
        settings = MeasureSettings.from_dict(settings_data)
        if getattr(settings, "processes", 1) > 1:
            result = run_in_fresh_processes(self._options, case, settings)
        else:
            result = self._worker.run(case, settings)
        data = result.to_dict()
        data["worker"] = {**data.get("worker", {}), "node": self.node(), "executor": "ray"}
        return {"result": data, "memory_available_bytes": self.memory_available()}

    def stop(self) -> None:
        self._worker.stop()


class _Slot:
    """One place a cell can run: its actor's Ray options and worker options, and the actor once started."""

    def __init__(self, actor_options: dict[str, Any], worker_options: dict[str, Any]) -> None:
        self.actor_options = actor_options
        self.worker_options = worker_options
        self._actor = None

    @property
    def actor(self):
        if self._actor is None:
            self._actor = _remote_cell_runner().options(**self.actor_options).remote(self.worker_options)
        return self._actor

    def discard(self) -> None:
        """Kill the actor (with its worker process); the next use starts a fresh one."""
        if self._actor is not None:
            try:
                ray.kill(self._actor, no_restart=True)
            except Exception:
                pass
        self._actor = None


class RayExecutor:
    """Runs cells as Ray actor calls, one in flight per slot; see the module docstring.

    address: a Ray cluster address (``auto``, ``ray://host:10001``, ``host:6379``);
        None starts a local Ray instance (``num_cpus`` CPUs, default: all).
    cpu_slots_per_node: CPU cells that may run side by side on one node.
    memory_limit_bytes, threads, calibration: as for the local executor's workers
        (threads defaults to the slot's CPU count on the CPU).
    init_options: more keywords for ``ray.init``.
    """

    remote = True  # cells run on other nodes: which devices exist is their call, not the driver's

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpu_slots_per_node: int = 1,
                 memory_limit_bytes: int | None = None, threads: int | None = None,
                 calibration: dict[str, Any] | None = None, init_options: dict[str, Any] | None = None) -> None:
        if cpu_slots_per_node < 1:
            raise AttnbenchError(f"cpu_slots_per_node must be at least 1, got {cpu_slots_per_node}")
        self.address = address
        self.num_cpus = num_cpus
        self.cpu_slots_per_node = cpu_slots_per_node
        self._worker_options = {"memory_limit_bytes": memory_limit_bytes, "threads": threads,
                                "calibration": calibration}
        self._init_options = dict(init_options or {})
        self._started_ray = False
        self._pools: dict[str, list[_Slot]] = {}
        self._memory: dict[str, dict[int, int]] = {}
        self.startup_s: float | None = None

    # Ray and the actors -------------------------------------------------------------------

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        started = time.perf_counter()
        env_vars = {name: os.environ[name] for name in PROPAGATED_ENV if os.environ.get(name)}
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": True, "logging_level": "warning"}
        if env_vars:
            options["runtime_env"] = {"env_vars": env_vars}
        if self.address is None and self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        options.update(self._init_options)
        try:
            # "local": always a fresh instance, never a cluster some earlier `ray start` left behind.
            ray.init(address=self.address or "local", **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise AttnbenchError(f"cannot start or reach {where}: {exc}") from None
        self._started_ray = True
        self.startup_s = time.perf_counter() - started

    def _pool(self, device: str) -> list[_Slot]:
        if device not in self._pools:
            self._connect()
            self._pools[device] = [_Slot(*spec) for spec in self._slot_specs(device)]
            self._memory[device] = {}
        return self._pools[device]

    def _slot_specs(self, device: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(Ray actor options, worker options) for every slot of `device` in the cluster."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if device == "cuda":
            gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
            if gpus == 0:
                raise AttnbenchError("the Ray cluster has no GPUs, so it cannot run CUDA cells; "
                                     "run them with --device cpu, or add GPU nodes to the cluster")
            worker = {**self._worker_options, "device": "cuda"}
            return [({"num_gpus": 1, "num_cpus": 1}, worker) for _ in range(gpus)]
        specs = []
        for node in nodes:
            node_cpus = int(node["Resources"].get("CPU", 0))
            if node_cpus < 1:
                continue
            slots = min(self.cpu_slots_per_node, node_cpus)
            per_slot = node_cpus // slots
            worker = {**self._worker_options, "device": "cpu", "threads": self._worker_options["threads"] or per_slot}
            affinity = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            specs += [({"num_cpus": per_slot, "scheduling_strategy": affinity}, worker) for _ in range(slots)]
        if not specs:
            raise AttnbenchError("the Ray cluster has no node with a CPU to run cells on")
        return specs

    # The executor interface ----------------------------------------------------------------

    def available_memory(self, device: str) -> int | None:
        """The least free memory any slot of `device` last reported (None if none reported)."""
        pool = self._pool(device)
        known = self._memory[device]
        if not known:
            values = ray.get([slot.actor.memory_available.remote() for slot in pool])
            known.update({id(slot): value for slot, value in zip(pool, values, strict=True) if value is not None})
        return min(known.values()) if known else None

    def map(self, cases: Iterator[Case], settings: MeasureSettings, on_start=None,
            on_progress=None) -> Iterator[tuple[Case, Result]]:
        cases = iter(cases)
        settings_data = settings.to_dict()
        in_flight: dict[Any, tuple[Case, _Slot, int]] = {}
        queue: list[tuple[Case, int]] = []         # (case, attempt): retries first, then the plan
        exhausted = False
        try:
            while True:
                # Fill every idle slot, pulling the next case only when its device has one free.
                while True:
                    if not queue and not exhausted:
                        try:
                            queue.append((next(cases), 0))
                        except StopIteration:
                            exhausted = True
                    if not queue:
                        break
                    case, attempt = queue[0]
                    busy = {id(slot) for _, slot, _ in in_flight.values()}
                    idle = [slot for slot in self._pool(case.device) if id(slot) not in busy]
                    if not idle:
                        break
                    queue.pop(0)
                    if on_start and attempt == 0:
                        on_start(case)
                    slot = idle[0]
                    in_flight[slot.actor.run.remote(case.to_dict(), settings_data)] = (case, slot, attempt)
                if not in_flight:
                    return
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    case, slot, attempt = in_flight.pop(ref)
                    try:
                        payload = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        # The actor itself (not the cell's worker process) died: a lost node, or the
                        # actor killed from outside. Try the cell once more on a fresh actor.
                        slot.discard()
                        self._memory[case.device].pop(id(slot), None)
                        if attempt < ACTOR_RETRIES:
                            queue.insert(0, (case, attempt + 1))
                            continue
                        yield case, Result("crashed", f"the Ray actor running the cell died {attempt + 1} times "
                                                      f"({_first_line(exc)}); the cell was not measured")
                        continue
                    except ray.exceptions.RayError as exc:
                        yield case, Result("error", f"Ray could not run the cell: {_first_line(exc)}")
                        continue
                    if payload.get("memory_available_bytes") is not None:
                        self._memory[case.device][id(slot)] = payload["memory_available_bytes"]
                    yield case, Result.from_dict(payload["result"])
        finally:
            # Stopped (Ctrl-C, an error in the driver) with cells in flight: end them now
            # rather than let them run on unseen; their slots start fresh actors if used again.
            for _case, slot, _attempt in in_flight.values():
                slot.discard()

    def close(self) -> None:
        slots = [slot for pool in self._pools.values() for slot in pool if slot._actor is not None]
        self._pools.clear()
        self._memory.clear()
        if slots and ray.is_initialized():
            try:
                ray.get([slot.actor.stop.remote() for slot in slots], timeout=30)
            except Exception:
                pass
            for slot in slots:
                slot.discard()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


@functools.lru_cache(maxsize=1)
def _remote_cell_runner():
    return ray.remote(CellRunner)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__

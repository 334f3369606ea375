"""Profile one case under `torch.profiler`: a trace, the top operators, and the memory peak with its allocators.

`profile_case` builds the case's inputs, prepares the variant, warms up
(outside the profiler), then profiles `steps` calls of the same step the
harness times (the forward; forward and backward in ``fwd_bwd`` mode), each
inside ``record_function("attnbench.step")``, with CPU activity (and CUDA
activity on a CUDA case), ``record_shapes=True`` and ``profile_memory=True``.
It writes into its output folder:

- ``trace.json``: the Chrome trace (open in https://ui.perfetto.dev or chrome://tracing);
- ``ops.csv``: every operator (``key_averages()``), by self time, device time first on CUDA;
- ``memory.json``: the memory timeline's peak and what allocated it (below);
- ``summary.json``: the case, the files, the top operators and the memory peak.

What the memory report says, precisely: the profiler records one event per
allocation and free made by the allocators it instruments (the CPU
allocator, and on CUDA the caching allocator's *allocated*, not reserved,
bytes) with the address, the signed size and the time. Walking these events
in time order per device and keeping the allocations made *inside the
profiled window* that are still live gives the live bytes over time; its
maximum is ``peak_bytes``. Memory allocated before profiling (the inputs,
weights, warm-up caches) is not in it, and frees of such memory are ignored.
Each allocation is attributed to the innermost operator (``cpu_op`` event on
the same thread) running when it was made. ``peak_op`` is the operator whose
allocation reached the peak, and ``live_at_peak`` groups the allocations
live at that moment by the operator that made them (bytes, count).
"""

from __future__ import annotations

import csv
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError, did_you_mean
from attnbench.core.knobs import declare_knobs
from attnbench.core.registry import default_registry
from attnbench.store import load_run

STEP_ANNOTATION = "attnbench.step"
DEVICE_TYPES = {0: "cpu", 1: "cuda"}


class UnsupportedCaseError(AttnbenchError):
    """The variant cannot run the case that was asked for (every reason is in the message)."""


class ParamError(AttnbenchError):
    """A --param that is not KEY=VALUE, names no knob of the variant, or has a value of the wrong type."""


@dataclass
class ProfileSummary:
    case: Case
    out_dir: Path
    steps: int
    warmup_calls: int
    ops: list[dict[str, Any]]
    memory: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    sort_key: str = "self_cpu_s"

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {"case": self.case.to_dict(), "case_id": self.case.id, "label": self.case.label,
                "steps": self.steps, "warmup_calls": self.warmup_calls, "sorted_by": self.sort_key,
                "top_ops": self.ops[:top], "memory": self.memory, "files": self.files}


def parse_params(pairs: tuple[str, ...] | list[str], declared: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """KEY=VALUE strings as the variant's knob values, each text parsed by its `Knob`.

    `declared` is the variant's `knobs` (name -> Knob); a plain default in its
    place stands for a knob of that value's type.
    """
    knobs = declare_knobs(declared, owner=f"variant {variant!r}")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param window=256")
        if key not in knobs:
            raise ParamError(f"--param {key}: variant {variant!r} has no knob {key!r}"
                             f"{did_you_mean(key, knobs)}; its knobs: {', '.join(knobs) or 'none'}")
        knob = knobs[key]
        try:
            params[key] = knob.parse(text)
        except ValueError as exc:
            about = f", {knob.doc}" if knob.doc else ""
            raise ParamError(f"--param {key}={text.strip()}: {exc} (the default is {knob.default!r}{about})") from None
    return params


def check_supported(case: Case, variant) -> None:
    reasons = variant.unsupported_reasons(case)
    if reasons:
        raise UnsupportedCaseError(f"{case.variant} cannot run {case.label}: " + "; ".join(reasons))


def profile_case(case: Case, variant, out_dir: Path, *, steps: int = 3, warmup_calls: int = 3,
                 trace: bool = True) -> ProfileSummary:
    """Profile `steps` calls of `case` after `warmup_calls`; write trace, ops.csv, memory.json, summary.json."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from attnbench.measure.cell.setup import Step, sync_for
    from attnbench.measure.inputs import make_inputs

    check_supported(case, variant)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(case.seed)
    inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
    step = Step(case, inputs, variant.prepare(case, inputs))
    sync = sync_for(case)
    for _ in range(max(1, warmup_calls)):
        step()
    sync()
    activities = [ProfilerActivity.CPU]
    if case.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True, profile_memory=True) as prof:
        for _ in range(steps):
            with record_function(STEP_ANNOTATION):
                result = step()
            del result
            sync()
    files = {}
    trace_path = out_dir / "trace.json"
    prof.export_chrome_trace(str(trace_path))
    events = json.loads(trace_path.read_text()).get("traceEvents", [])
    if trace:
        files["trace"] = str(trace_path)
    else:
        trace_path.unlink()
    sort_key = "self_device_s" if case.device == "cuda" else "self_cpu_s"
    ops = operator_rows(prof.key_averages(), sort_key)
    files["ops"] = str(write_ops_csv(ops, out_dir / "ops.csv"))
    memory = memory_peak(events)
    memory["steps"] = steps
    (out_dir / "memory.json").write_text(json.dumps(memory, indent=2))
    files["memory"] = str(out_dir / "memory.json")
    summary = ProfileSummary(case, out_dir, steps, warmup_calls, ops, memory, files, sort_key)
    (out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    files["summary"] = str(out_dir / "summary.json")
    return summary


OPS_COLUMNS = ("name", "calls", "self_cpu_s", "cpu_total_s", "self_device_s", "device_total_s",
               "self_cpu_memory_bytes", "self_device_memory_bytes", "share_of_self_time")


def operator_rows(averages, sort_key: str = "self_cpu_s") -> list[dict[str, Any]]:
    """One row per operator from `key_averages()`, seconds not microseconds, the step annotation left out."""
    rows = []
    for event in averages:
        if event.key == STEP_ANNOTATION:
            continue
        rows.append({
            "name": event.key,
            "calls": event.count,
            "self_cpu_s": event.self_cpu_time_total / 1e6,
            "cpu_total_s": event.cpu_time_total / 1e6,
            "self_device_s": getattr(event, "self_device_time_total", 0) / 1e6,
            "device_total_s": getattr(event, "device_time_total", 0) / 1e6,
            "self_cpu_memory_bytes": event.self_cpu_memory_usage,
            "self_device_memory_bytes": getattr(event, "self_device_memory_usage", 0),
        })
    total = sum(row[sort_key] for row in rows) or 1.0
    for row in rows:
        row["share_of_self_time"] = row[sort_key] / total
    rows.sort(key=lambda row: row[sort_key], reverse=True)
    return rows


def write_ops_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=OPS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) for key in OPS_COLUMNS})
    return path


class _OpIndex:
    """The innermost `cpu_op` around a time on a thread, from a trace's complete ('X') events."""

    def __init__(self, events: list[dict]) -> None:
        self.by_thread: dict[Any, list[tuple[float, float, str]]] = {}
        for event in events:
            if event.get("ph") == "X" and event.get("cat") in ("cpu_op", "user_annotation"):
                start = float(event["ts"])
                self.by_thread.setdefault(event.get("tid"), []).append(
                    (start, start + float(event.get("dur", 0)), event.get("name", "?")))
        self.starts = {}
        for tid, spans in self.by_thread.items():
            spans.sort()
            self.starts[tid] = [span[0] for span in spans]

    def at(self, tid, ts: float) -> str:
        spans = self.by_thread.get(tid, [])
        best: tuple[float, str] | None = None
        for index in range(bisect_right(self.starts.get(tid, []), ts) - 1, -1, -1):
            start, end, name = spans[index]
            if start <= ts <= end and (best is None or end - start < best[0]):
                best = (end - start, name)
        return best[1] if best else "(outside any operator)"


def memory_peak(events: list[dict], top: int = 10) -> dict[str, Any]:
    """Peak live bytes allocated inside the profiled window, per device, and what allocated them.

    `events` are a Chrome trace's ``traceEvents`` from ``torch.profiler`` with
    ``profile_memory=True`` (see the module docstring for what is counted).
    """
    ops = _OpIndex(events)
    memory_events = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: float(e["ts"]))
    origin = min((float(e["ts"]) for e in events if "ts" in e), default=0.0)
    devices: dict[str, dict[str, Any]] = {}
    state: dict[str, dict[str, Any]] = {}
    for event in memory_events:
        args = event.get("args", {})
        device = DEVICE_TYPES.get(args.get("Device Type"), f"device-type-{args.get('Device Type')}")
        if args.get("Device Id", -1) not in (-1, 0, None):
            device = f"{device}:{args['Device Id']}"
        size = int(args.get("Bytes", 0))
        address = args.get("Addr")
        st = state.setdefault(device, {"live": {}, "bytes": 0, "peak": 0, "peak_ts": None, "peak_op": None,
                                       "peak_live": {}, "allocator_max": 0, "allocations": 0})
        st["allocator_max"] = max(st["allocator_max"], int(args.get("Total Allocated", 0)))
        if size > 0:
            op = ops.at(event.get("tid"), float(event["ts"]))
            st["live"][address] = (size, op)
            st["bytes"] += size
            st["allocations"] += 1
            if st["bytes"] > st["peak"]:
                st["peak"], st["peak_ts"], st["peak_op"] = st["bytes"], float(event["ts"]), op
                st["peak_live"] = dict(st["live"])
        elif size < 0 and address in st["live"]:
            freed, _ = st["live"].pop(address)
            st["bytes"] -= freed
    for device, st in state.items():
        grouped: dict[str, list[int]] = {}
        for size, op in st["peak_live"].values():
            entry = grouped.setdefault(op, [0, 0])
            entry[0] += size
            entry[1] += 1
        live = [{"op": op, "bytes": b, "count": c} for op, (b, c) in grouped.items()]
        live.sort(key=lambda row: row["bytes"], reverse=True)
        devices[device] = {
            "peak_bytes": st["peak"],
            "peak_at_us": None if st["peak_ts"] is None else st["peak_ts"] - origin,
            "peak_op": st["peak_op"],
            "live_at_peak": live[:top],
            "allocations": st["allocations"],
            "allocator_total_allocated_max": st["allocator_max"],
        }
    return {
        "method": "live bytes of allocations made inside the profiled window, from the profiler's [memory] "
                  "events (address, signed size, time); memory allocated before profiling (inputs, weights) "
                  "is not counted; each allocation is attributed to the innermost operator running when it "
                  "was made",
        "devices": devices,
    }


# ---------------------------------------------------------------- a whole run


def profile_cells(cases: list[dict], run_path: str, steps: int = 3) -> dict[str, Any]:
    """Profile each case (dicts) into ``<run>/profiles/<case_id>/``; runs in a spawned process."""
    registry = default_registry()
    index: dict[str, Any] = {}
    for data in cases:
        case = Case.from_dict(data)
        out_dir = Path(run_path) / "profiles" / case.id
        try:
            summary = profile_case(case, registry.get(case.variant), out_dir, steps=steps)
        except Exception as exc:  # one cell's failure must not stop the others
            index[case.id] = {"label": case.label, "error": f"{type(exc).__name__}: {exc}"}
            continue
        peaks = {device: info["peak_bytes"] for device, info in summary.memory["devices"].items()}
        index[case.id] = {"label": case.label, "folder": str(out_dir), "files": summary.files,
                          "top_op": summary.ops[0]["name"] if summary.ops else None, "peak_bytes": peaks}
    return index


def profile_run(run_path: Path, *, statuses: tuple[str, ...] = ("ok",), steps: int = 3,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Profile every stored cell of a run with a status in `statuses`, in one spawned process.

    Writes ``<run>/profiles/<case_id>/`` per cell and ``<run>/profiles/index.json``.
    A spawned process keeps the driver free of a CUDA context, as the workers do.
    """
    import concurrent.futures
    import multiprocessing

    loaded = load_run(run_path)
    cases = [cell.case for cell in loaded.cells if cell.result.status in statuses]
    if progress:
        progress(f"profiling {len(cases)} cells into {Path(run_path) / 'profiles'}")
    if not cases:
        return {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        index = pool.submit(profile_cells, cases, str(run_path), steps).result()
    folder = Path(run_path) / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").write_text(json.dumps(index, indent=2))
    return index

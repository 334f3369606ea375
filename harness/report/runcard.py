"""What a report says about a run: a one-line summary for the page's head, and its card: when and how long,
the cells by status, and the machine's measured peak with units. Machine paths, hashes and raw JSON go
into the card's collapsed details."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from attnbench.core.units import finite, format_bytes, format_seconds
from attnbench.report.tables import format_rate
from attnbench.store import LoadedRun

PEAK_KEYS = ("matmul_flops_per_s", "copy_bytes_per_s", "matmul_size", "copy_bytes", "measured_at", "cached",
             "seconds", "load_avg_1m", "warnings", "device", "devices")


@dataclass(frozen=True)
class RunCard:
    """One run as the report shows it (every text escaped by the template)."""

    label: str
    run_id: str
    name: str
    suite: str
    status: str
    started: str
    ended: str
    duration: str
    path: str
    counts: str
    cells: int
    machine: str
    calibration: tuple[tuple[str, str], ...]
    calibration_warnings: tuple[str, ...]
    calibration_details: tuple[tuple[str, str], ...]
    environment: tuple[tuple[str, str], ...]
    suite_text: str
    problems: tuple[str, ...]

    @property
    def line(self) -> str:
        """'quick · finished 2026-12-06 07:25 UTC · 2.7 min · 43 cells: ok 43 · Xeon, 2 threads, torch 2.13 ·
        peak 282 GFLOP/s float32, copy 18.9 GB/s'."""
        parts = [self.label, f"{self.status} {self.started}", self.duration,
                 f"{self.cells} cells: {self.counts.replace(': ', ' ')}" if self.cells else "no cells", self.machine,
                 self.peaks or "not calibrated"]
        return " · ".join(part for part in parts if part)

    @property
    def peaks(self) -> str:
        """'peak 282 GFLOP/s float32, copy 18.9 GB/s' from the calibration rows."""
        found = []
        for key, value in self.calibration:
            figure = value.split(",")[0]
            if key.startswith("matmul peak, "):
                found.append(f"peak {figure} {key.removeprefix('matmul peak, ')}")
            elif key.startswith("copy bandwidth"):
                found.append(f"copy {figure}{key.removeprefix('copy bandwidth')}")
        return ", ".join(found)


def run_card(loaded: LoadedRun, label: str, contended: int = 0, inaccurate: int = 0) -> RunCard:
    """The card of `loaded`; `contended` and `inaccurate` count its ok cells that are so."""
    run = loaded.run
    calibration = run.calibration or {}
    rows, warnings, details = calibration_view(calibration)
    return RunCard(
        label=label, run_id=run.run_id, name=run.name, suite=run.suite_name, status=loaded.status,
        started=when(run.started_at), ended=when(run.ended_at) if run.ended_at else "not ended",
        duration=duration(run.started_at, run.ended_at), path=str(loaded.path),
        counts=status_counts(loaded, contended, inaccurate), cells=len(loaded.cells),
        machine=machine(run.environment or {}), calibration=rows, calibration_warnings=warnings,
        calibration_details=details,
        environment=tuple((str(k), value_text(v)) for k, v in sorted((run.environment or {}).items())),
        suite_text=run.suite_text, problems=tuple(loaded.problems))


def status_counts(loaded: LoadedRun, contended: int = 0, inaccurate: int = 0) -> str:
    """'ok: 41 (2 contended), oom: 1': the cells by status, ok first, with the ok cells no verdict trusts."""
    counts: dict[str, int] = {}
    for cell in loaded.cells:
        counts[cell.result.status] = counts.get(cell.result.status, 0) + 1
    flagged = ", ".join(f"{n} {what}" for n, what in ((contended, "contended"), (inaccurate, "inaccurate")) if n)
    return ", ".join(f"{status}: {count}" + (f" ({flagged})" if status == "ok" and flagged else "")
                     for status, count in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))


def calibration_view(calibration: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...],
                                                            tuple[tuple[str, str], ...]]:
    """(figures a person reads, warnings, details for the collapsed block) of a run's calibration."""
    devices = calibration.get("devices") or ({calibration.get("device", "device"): calibration} if calibration else {})
    rows: list[tuple[str, str]] = []
    warnings: list[str] = []
    several = len(devices) > 1
    for device, data in devices.items():
        where = f" ({device})" if several else ""
        sizes = data.get("matmul_size") or {}
        for dtype, rate in sorted((data.get("matmul_flops_per_s") or {}).items()):
            size = f", {sizes[dtype]}×{sizes[dtype]} matmul" if dtype in sizes else ""
            rows.append((f"matmul peak, {dtype}{where}", f"{format_rate(rate, 'FLOP/s')}{size}"))
        if finite(data.get("copy_bytes_per_s")) is not None:
            copied = f", {format_bytes(data['copy_bytes'] / 2)} copied" if finite(data.get("copy_bytes")) else ""
            rows.append((f"copy bandwidth{where}", f"{format_rate(data['copy_bytes_per_s'], 'B/s')}{copied}"))
        measured = when(data.get("measured_at")) if data.get("measured_at") else "unknown"
        took = f" in {format_seconds(data['seconds'])}" if finite(data.get("seconds")) is not None else ""
        rows.append((f"measured{where}", measured + took + (" (reused from the cache)" if data.get("cached") else "")))
        load = finite(data.get("load_avg_1m"))
        if load is not None:
            rows.append((f"load average then{where}", f"{load:.2f} (1 minute)"))
        warnings.extend(str(w) for w in data.get("warnings") or ())
    details = tuple((str(key), value_text(value)) for key, value in sorted(calibration.items())
                    if key not in PEAK_KEYS and value not in (None, "", [], {}))
    return tuple(rows), tuple(warnings), details


def machine(environment: dict[str, Any]) -> str:
    """'Intel Xeon, 2 threads, torch 2.13.0' or 'NVIDIA H100 ×1, CUDA 12.4, torch 2.4.0'."""
    parts = []
    if environment.get("gpu_name"):
        count = environment.get("gpu_count")
        parts.append(f"{environment['gpu_name']}" + (f" ×{count}" if count else ""))
        if environment.get("torch_cuda"):
            parts.append(f"CUDA {environment['torch_cuda']}")
    elif environment.get("cpu_model"):
        threads = environment.get("torch_threads") or environment.get("threads")
        parts.append(str(environment["cpu_model"]) + (f", {threads} threads" if threads else ""))
    if environment.get("torch"):
        parts.append(f"torch {environment['torch']}")
    return ", ".join(parts)


def value_text(value: Any) -> str:
    """An environment or calibration value as text: nested data as 'key: value' pairs, none as ''."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {value_text(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(value_text(v) for v in value)
    return "" if value is None else str(value)


def when(stamp: Any) -> str:
    """'2026-12-06 07:25 UTC' from an ISO time stamp; the text itself where it does not parse."""
    try:
        moment = dt.datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return str(stamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


def duration(started: str | None, ended: str | None) -> str:
    """'42 s', '2.7 min', '3.1 h'; 'unknown' without both ends."""
    try:
        start = dt.datetime.fromisoformat(str(started))
        end = dt.datetime.fromisoformat(str(ended))
    except (TypeError, ValueError):
        return "unknown"
    seconds = (end - start).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

"""Telemetry around a cell: a low-rate background sampler, energy counters, and the warnings they raise.

- `TelemetrySampler`: a daemon thread that wakes `hz` times a second (20 by
  default) and reads psutil (this process's CPU%, RSS, the CPU frequency) and,
  for a CUDA cell, NVML (GPU utilisation, memory used, power, SM clock,
  throttle reasons). It runs around warm-up and the timed repetitions. Its
  cost is kept out of the timing by its low rate: each wake holds the GIL for
  tens of microseconds (its own busy time is measured and stored as
  `sampler_busy_fraction`), and it never synchronizes a device.
- `EnergyMeter`: reads an energy counter just before the first and just after
  the last timed repetition, so joules per call cover exactly the timed calls.
  CUDA: NVML's `nvmlDeviceGetTotalEnergyConsumption` (mJ, Volta and newer).
  CPU on Linux: RAPL package counters (`/sys/class/powercap/intel-rapl:N/energy_uj`,
  wrap-around via `max_energy_range_uj`), which count the whole package, so
  other processes' work is included.
- Where a counter is missing or unreadable, the telemetry carries a note
  saying so; nothing here raises.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POWERCAP = Path("/sys/class/powercap")
DEFAULT_HZ = 20.0
CPU_FREQ_CHANGE = 0.05

# NVML clock-event ("throttle") reason bits, from nvml.h. Idle, application
# clocks and display clocks are not slowdowns; the rest are.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
BENIGN_THROTTLE = 0x1 | 0x2 | 0x100


def throttle_names(mask: int) -> list[str]:
    """The names of the reason bits set in an NVML throttle mask."""
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def slowdown_names(mask: int) -> list[str]:
    """The reasons in `mask` that slow the GPU down (idle and clock settings left out)."""
    return throttle_names(mask & ~BENIGN_THROTTLE)


# ---------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str
    max_range_uj: int


def rapl_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """Readable top-level RAPL package domains (`intel-rapl:N`; sub-domains would double count)."""
    domains = []
    try:
        candidates = sorted(root.glob("intel-rapl:*"))
    except OSError:
        return []
    for path in candidates:
        if path.name.count(":") != 1:
            continue
        try:
            (path / "energy_uj").read_text()
            max_range = int((path / "max_energy_range_uj").read_text())
            name = (path / "name").read_text().strip() if (path / "name").exists() else path.name
        except (OSError, ValueError):
            continue
        domains.append(RaplDomain(path, name, max_range))
    return domains


def rapl_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Energy between two readings of a counter that wraps at `max_range_uj`."""
    if after >= before:
        return after - before
    return after + max_range_uj - before


# ---------------------------------------------------------------- NVML


class Nvml:
    """A handle on one GPU through pynvml, or `None` from `open` with the reason in `error`."""

    error: str = ""

    def __init__(self, pynvml, handle) -> None:
        self.pynvml = pynvml
        self.handle = handle

    @classmethod
    def open(cls, device_index: int | None = None) -> tuple[Nvml | None, str]:
        try:
            import pynvml
        except ImportError:
            return None, "NVML not available: the nvidia-ml-py package is not installed"
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # no driver, no GPU: a note, not an error
            return None, f"NVML not available: {_nvml_error(exc)}"
        try:
            handle = _nvml_handle(pynvml, device_index)
        except Exception as exc:
            return None, f"NVML has no handle for the CUDA device: {_nvml_error(exc)}"
        return cls(pynvml, handle), ""

    def read(self, name: str):
        """One NVML reading by short name, or None when this GPU does not answer it."""
        nv, h = self.pynvml, self.handle
        try:
            if name == "util":
                return nv.nvmlDeviceGetUtilizationRates(h).gpu
            if name == "memory_used":
                return nv.nvmlDeviceGetMemoryInfo(h).used
            if name == "power_mw":
                return nv.nvmlDeviceGetPowerUsage(h)
            if name == "sm_clock":
                return nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
            if name == "throttle":
                reader = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                    nv.nvmlDeviceGetCurrentClocksThrottleReasons
                return int(reader(h))
            if name == "energy_mj":
                return int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
        except Exception:
            return None
        raise KeyError(name)


def _nvml_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _nvml_handle(pynvml, device_index: int | None):
    """The NVML handle of torch's CUDA device: by UUID, else PCI bus id, else index."""
    import torch

    index = torch.cuda.current_device() if device_index is None else device_index
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:
            pass
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        try:
            domain = getattr(props, "pci_domain_id", 0)
            device = getattr(props, "pci_device_id", 0)
            return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08X}:{bus:02X}:{device:02X}.0")
        except Exception:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)


# ---------------------------------------------------------------- energy


class EnergyMeter:
    """Joules between `start()` and `stop()` from the device's energy counter, or a note why not."""

    def __init__(self, device: str, nvml: Nvml | None = None, rapl_root: Path = POWERCAP) -> None:
        self.device = device
        self.nvml = nvml
        self.source = ""
        self.note = ""
        self._rapl: list[RaplDomain] = []
        self._before: Any = None
        self._started = 0.0
        if device == "cuda":
            if nvml is None:
                self.note = "no GPU energy: NVML is not available"
            elif nvml.read("energy_mj") is None:
                self.note = "no GPU energy: this GPU does not report nvmlDeviceGetTotalEnergyConsumption"
            else:
                self.source = "nvml-total-energy"
        else:
            self._rapl = rapl_domains(rapl_root)
            if self._rapl:
                self.source = "rapl:" + "+".join(d.name for d in self._rapl) + " (whole package)"
            elif not rapl_root.exists():
                self.note = f"no CPU energy: {rapl_root} does not exist (no RAPL on this machine or OS)"
            else:
                self.note = f"no CPU energy: the RAPL counters under {rapl_root} are not readable (root only?)"

    def _read(self):
        if self.source == "nvml-total-energy":
            return self.nvml.read("energy_mj")
        if self._rapl:
            try:
                return [int((d.path / "energy_uj").read_text()) for d in self._rapl]
            except (OSError, ValueError):
                return None
        return None

    def start(self) -> None:
        self._before = self._read()
        self._started = time.perf_counter()

    def stop(self) -> tuple[float | None, float]:
        """(joules or None, seconds) since `start`."""
        after = self._read()
        seconds = time.perf_counter() - self._started
        if self._before is None or after is None:
            if self.source and not self.note:
                self.note = f"energy counter {self.source} could not be read"
            return None, seconds
        if self.source == "nvml-total-energy":
            return (after - self._before) / 1e3, seconds
        micro = sum(rapl_delta_uj(b, a, d.max_range_uj) for b, a, d in zip(self._before, after, self._rapl,
                                                                          strict=True))
        return micro / 1e6, seconds


# ---------------------------------------------------------------- sampler


@dataclass
class _Series:
    values: list[float] = field(default_factory=list)

    def add(self, value) -> None:
        if value is not None:
            self.values.append(float(value))

    def stats(self) -> dict[str, float]:
        if not self.values:
            return {}
        return {"mean": sum(self.values) / len(self.values), "min": min(self.values), "max": max(self.values)}


class TelemetrySampler:
    """Samples psutil (and NVML for a CUDA cell) in a daemon thread at `hz`; a context manager."""

    def __init__(self, device: str = "cpu", hz: float = DEFAULT_HZ, nvml: Nvml | None = None) -> None:
        import psutil

        self.device = device
        self.period = 1.0 / hz if hz > 0 else 0.0
        self.hz = hz
        self.nvml = nvml
        self.process = psutil.Process()
        self.psutil = psutil
        self.series = {name: _Series() for name in (
            "cpu_percent", "rss_bytes", "cpu_freq_mhz", "gpu_util_percent", "gpu_memory_used_bytes",
            "gpu_power_w", "gpu_sm_clock_mhz")}
        self.throttle_mask = 0
        self.samples = 0
        self.busy_s = 0.0
        self.started = self.stopped = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_freq_before = _cpu_freq_mhz(psutil)
        self.cpu_freq_after: float | None = None

    def __enter__(self) -> TelemetrySampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.cpu_freq_before = _cpu_freq_mhz(self.psutil)
        self.process.cpu_percent(None)  # primes the counter; the next call covers the interval since
        self.started = time.perf_counter()
        if self.period > 0:
            self._thread = threading.Thread(target=self._loop, name="attnbench-telemetry", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.stopped = time.perf_counter()
        self.cpu_freq_after = _cpu_freq_mhz(self.psutil)

    def _loop(self) -> None:
        while not self._done.wait(self.period):
            began = time.perf_counter()
            self.sample_once()
            self.busy_s += time.perf_counter() - began

    def sample_once(self) -> None:
        s = self.series
        try:
            s["cpu_percent"].add(self.process.cpu_percent(None))
            s["rss_bytes"].add(self.process.memory_info().rss)
        except Exception:  # the process is ours; a failure here is not worth a crash
            pass
        s["cpu_freq_mhz"].add(_cpu_freq_mhz(self.psutil))
        if self.nvml is not None:
            s["gpu_util_percent"].add(self.nvml.read("util"))
            s["gpu_memory_used_bytes"].add(self.nvml.read("memory_used"))
            power = self.nvml.read("power_mw")
            s["gpu_power_w"].add(None if power is None else power / 1e3)
            s["gpu_sm_clock_mhz"].add(self.nvml.read("sm_clock"))
            mask = self.nvml.read("throttle")
            if mask is not None:
                self.throttle_mask |= mask
        self.samples += 1

    def summary(self) -> dict[str, Any]:
        """Mean/min/max of each series that had readings, and the sampler's own cost."""
        out: dict[str, Any] = {"sampler_hz": self.hz, "sampler_samples": self.samples}
        span = max(self.stopped - self.started, 1e-9)
        out["sampler_busy_fraction"] = self.busy_s / span
        for name, series in self.series.items():
            for stat, value in series.stats().items():
                out[f"{name}_{stat}"] = value
        out["cpu_freq_mhz_before"] = self.cpu_freq_before
        out["cpu_freq_mhz_after"] = self.cpu_freq_after
        if self.nvml is not None:
            out["gpu_throttle_mask"] = self.throttle_mask
            out["gpu_throttle_reasons"] = throttle_names(self.throttle_mask)
        return out


def _cpu_freq_mhz(psutil) -> float | None:
    try:
        freq = psutil.cpu_freq()
    except Exception:  # some platforms raise instead of returning None
        return None
    return float(freq.current) if freq is not None and freq.current else None


def load_average_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------- warnings


def cpu_frequency_changed(before: float | None, after: float | None, low: float | None = None,
                          high: float | None = None, tolerance: float = CPU_FREQ_CHANGE) -> str | None:
    """A warning when the CPU clock moved by more than `tolerance` during the cell, else None."""
    values = [v for v in (before, after, low, high) if v]
    if len(values) < 2:
        return None
    lowest, highest = min(values), max(values)
    if (highest - lowest) / highest > tolerance:
        return (f"the CPU frequency changed during the cell ({lowest:.0f} to {highest:.0f} MHz; "
                "frequency scaling makes times unstable: pin the governor to 'performance')")
    return None


def telemetry_warnings(telemetry: dict[str, Any], *, cv: float | None, cv_limit: float,
                       cpu_count: int | None = None) -> list[str]:
    """The warnings a cell stores: noisy samples, an overloaded machine, CPU scaling, GPU throttling."""
    warnings = []
    if cv is not None and cv > cv_limit:
        warnings.append(f"high variation: the samples' coefficient of variation is {cv:.1%} "
                        f"(above {cv_limit:.0%}); the machine may be busy")
    load, cores = telemetry.get("load_avg_1m"), cpu_count or os.cpu_count()
    if load is not None and cores and load > cores:
        warnings.append(f"the 1-minute load average ({load:.2f}) exceeds the {cores} cores: "
                        "other processes competed for the CPU")
    scaled = cpu_frequency_changed(telemetry.get("cpu_freq_mhz_before"), telemetry.get("cpu_freq_mhz_after"),
                                   telemetry.get("cpu_freq_mhz_min"), telemetry.get("cpu_freq_mhz_max"))
    if scaled:
        warnings.append(scaled)
    slowdowns = slowdown_names(int(telemetry.get("gpu_throttle_mask") or 0))
    if slowdowns:
        warnings.append(f"the GPU throttled during the cell ({', '.join(slowdowns)})")
    return warnings

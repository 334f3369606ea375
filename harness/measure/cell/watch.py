"""The sampler and the energy meter around one cell's timing (`CellTelemetry`)."""

from __future__ import annotations

from attnbench.core.case import Case
from attnbench.core.failures import describe_exception
from attnbench.core.settings import MeasureSettings
from attnbench.measure.telemetry import EnergyMeter, Nvml, TelemetrySampler, load_average_1m
from attnbench.measure.timing import TimedSamples


class CellTelemetry:
    """The sampler and the energy meter around one cell's timing; never raises for a missing counter.

    The sampler runs around warm-up and the timed repetitions; the energy
    counter is read by `timed_start`/`timed_stop`, which the timing loops call
    just outside the first and last timed repetition.
    """

    def __init__(self, case: Case, settings: MeasureSettings) -> None:
        self.case = case
        self.enabled = settings.telemetry
        self.notes: list[str] = []
        self.sampler = self.meter = None
        self.energy_j: float | None = None
        self.energy_s = 0.0
        if not self.enabled:
            return
        nvml = None
        if case.device == "cuda":
            nvml, note = _nvml_for_process()
            if note:
                self.notes.append(note)
        try:
            self.sampler = TelemetrySampler(case.device, settings.telemetry_hz, nvml)
        except Exception as exc:  # psutil missing or refusing: a note, not an error
            self.notes.append(f"no sampler: {describe_exception(exc)}")
        self.meter = EnergyMeter(case.device, nvml)
        if self.meter.note:
            self.notes.append(self.meter.note)

    def __enter__(self) -> CellTelemetry:
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def timed_start(self) -> None:
        if self.meter is not None and self.meter.source:
            self.meter.start()

    def timed_stop(self) -> None:
        if self.meter is not None and self.meter.source:
            self.energy_j, self.energy_s = self.meter.stop()

    def summary(self, timed: TimedSamples) -> dict:
        out: dict = {"load_avg_1m": load_average_1m()}
        if not self.enabled:
            out["notes"] = ["telemetry off (measure.telemetry = false)"]
            return out
        if self.sampler is not None:
            out.update(self.sampler.summary())
        if self.meter is not None and self.meter.source:
            out["energy_source"] = self.meter.source
            if self.energy_j is not None and timed.timed_calls:
                out["energy_j_total"] = self.energy_j
                out["energy_interval_s"] = self.energy_s
                out["energy_j_per_call"] = self.energy_j / timed.timed_calls
                if self.energy_j == 0:
                    self.notes.append("the energy counter did not move during the timed calls "
                                      "(the interval is shorter than its update period)")
            elif self.meter.note:
                self.notes.append(self.meter.note)
        if self.notes:
            out["notes"] = list(dict.fromkeys(self.notes))
        return out


_NVML: tuple[Nvml | None, str] | None = None


def _nvml_for_process() -> tuple[Nvml | None, str]:
    """NVML opened once per worker process (it is slow to initialise), then shared by its cells."""
    global _NVML
    if _NVML is None:
        _NVML = Nvml.open()
    return _NVML

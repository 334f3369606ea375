"""Telemetry: RAPL arithmetic on a fake sysfs tree, NVML through a fake, the warnings, a cell's telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.measure.telemetry import (
    EnergyMeter,
    TelemetrySampler,
    cpu_frequency_changed,
    rapl_delta_uj,
    rapl_domains,
    slowdown_names,
    telemetry_warnings,
    throttle_names,
)


def make_rapl(root: Path, energy_uj: int, max_range_uj: int = 262_143_328_850) -> Path:
    package = root / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "energy_uj").write_text(f"{energy_uj}\n")
    (package / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    (package / "name").write_text("package-0\n")
    core = root / "intel-rapl:0:0"  # a sub-domain: inside the package's count, must not be added again
    core.mkdir()
    (core / "energy_uj").write_text("5\n")
    (core / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return package


def test_rapl_delta_wraps_around():
    assert rapl_delta_uj(100, 350, 1000) == 250
    assert rapl_delta_uj(900, 100, 1000) == 200


def test_rapl_domains_are_packages_only(tmp_path):
    make_rapl(tmp_path, 1)
    domains = rapl_domains(tmp_path)
    assert [d.name for d in domains] == ["package-0"]
    assert domains[0].max_range_uj == 262_143_328_850


def test_cpu_energy_meter_reads_rapl_with_wrap(tmp_path):
    package = make_rapl(tmp_path, energy_uj=999_000_000, max_range_uj=1_000_000_000)
    meter = EnergyMeter("cpu", rapl_root=tmp_path)
    assert meter.source.startswith("rapl:package-0") and not meter.note
    meter.start()
    (package / "energy_uj").write_text("2500000\n")  # wrapped: 1 J to the top, then 2.5 J
    joules, _ = meter.stop()
    assert joules == pytest.approx(3.5)


def test_missing_counters_are_notes(tmp_path):
    missing = EnergyMeter("cpu", rapl_root=tmp_path / "absent")
    assert not missing.source and "does not exist" in missing.note
    assert EnergyMeter("cuda", nvml=None).note == "no GPU energy: NVML is not available"


class FakeNvml:
    def __init__(self, readings):
        self.readings = readings

    def read(self, name):
        value = self.readings[name]
        return value.pop(0) if isinstance(value, list) else value


def test_gpu_energy_from_nvml_millijoules():
    nvml = FakeNvml({"energy_mj": [1_000_000, 1_000_000, 1_004_500]})
    meter = EnergyMeter("cuda", nvml=nvml)
    assert meter.source == "nvml-total-energy"
    meter.start()
    joules, _ = meter.stop()
    assert joules == pytest.approx(4.5)


def test_sampler_summarises_nvml_readings():
    nvml = FakeNvml({"util": 90, "memory_used": 2 << 30, "power_mw": 300_000, "sm_clock": 1980,
                     "throttle": [0x1, 0x4, 0x1], "energy_mj": 0})
    sampler = TelemetrySampler("cuda", hz=0, nvml=nvml)  # no thread: sampled by hand
    sampler.start()
    for _ in range(3):
        sampler.sample_once()
    sampler.stop()
    summary = sampler.summary()
    assert summary["sampler_samples"] == 3
    assert summary["gpu_util_percent_mean"] == 90 and summary["gpu_power_w_max"] == 300
    assert summary["gpu_memory_used_bytes_max"] == 2 << 30 and summary["gpu_sm_clock_mhz_min"] == 1980
    assert summary["gpu_throttle_reasons"] == ["gpu_idle", "sw_power_cap"]
    assert summary["rss_bytes_max"] > 0


def test_sampler_thread_runs_and_measures_its_cost():
    import time

    with TelemetrySampler("cpu", hz=50) as sampler:
        time.sleep(0.3)
    summary = sampler.summary()
    assert summary["sampler_samples"] >= 1
    assert 0 <= summary["sampler_busy_fraction"] < 1


def test_throttle_reason_names():
    assert throttle_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert slowdown_names(0x1 | 0x2) == []
    assert slowdown_names(0x1 | 0x8) == ["hw_slowdown"]


def test_warnings():
    quiet = {"load_avg_1m": 0.5, "cpu_freq_mhz_before": 3000, "cpu_freq_mhz_after": 3000}
    assert telemetry_warnings(quiet, cv=0.01, cv_limit=0.1, cpu_count=2) == []
    busy = {"load_avg_1m": 3.5, "cpu_freq_mhz_before": 3000, "cpu_freq_mhz_after": 2000,
            "gpu_throttle_mask": 0x20}
    warnings = telemetry_warnings(busy, cv=0.25, cv_limit=0.1, cpu_count=2)
    assert len(warnings) == 4
    assert "25.0%" in warnings[0] and "3.50" in warnings[1] and "2000 to 3000 MHz" in warnings[2]
    assert "sw_thermal_slowdown" in warnings[3]
    assert cpu_frequency_changed(3000, 2990) is None
    assert cpu_frequency_changed(None, 2990) is None


def test_cell_telemetry_and_derived_numbers():
    """A real cell: outliers, cv, energy notes, arithmetic intensity and peak fraction against formulas."""
    from attnbench.core.case import Case
    from attnbench.core.registry import default_registry
    from attnbench.core.settings import MeasureSettings
    from attnbench.measure.cell import measure_case

    case = Case(variant="naive", seq_len=64, heads=2)
    calibration = {"matmul_flops_per_s": {"float32": 1e11}, "copy_bytes_per_s": 1e10, "device": "cpu"}
    settings = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.1, accuracy=False, memory=False, telemetry_hz=50)
    result = measure_case(case, default_registry().get("naive"), settings, calibration)
    assert result.status == "ok", result.reason
    telemetry = result.telemetry
    flops = 4 * 2 * 64 * 64 * 64
    assert result.flops == flops
    assert result.flops_per_s == pytest.approx(flops / result.timing.median_s)
    assert result.peak_fraction == pytest.approx(result.flops_per_s / 1e11)
    bytes_moved = (3 + 1) * 2 * 64 * 64 * 4  # q, k, v read and the output written, float32
    assert telemetry["arithmetic_intensity"] == pytest.approx(flops / bytes_moved)
    assert telemetry["roofline_flops_per_s"] == pytest.approx(min(1e11, flops / bytes_moved * 1e10))
    assert telemetry["outliers"]["count"] == len(telemetry["outliers"]["indices"])
    assert telemetry["target_rel_ci"] == 0.02 and telemetry["cv"] >= 0
    assert result.timing.stop_reason in ("ci", "budget", "max_reps")
    assert telemetry["timed_calls"] == result.timing.reps * result.timing.calls_per_sample
    if "energy_j_per_call" not in telemetry:
        assert any("energy" in note for note in telemetry["notes"])

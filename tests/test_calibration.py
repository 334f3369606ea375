"""Calibration: the cache keyed on the fingerprint, merging dtypes, peaks per device, small real measurements."""

from __future__ import annotations

import json
import statistics

import pytest

from attnbench.core.case import Case
from attnbench.measure.calibration import (
    cache_path,
    calibrate,
    calibrate_cases,
    describe,
    devices_and_dtypes,
    fingerprint_fields,
    fingerprint_hash,
    matmul_flops,
    measure_copy,
    measure_matmul,
    peak_for,
)


class FakeMeasure:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, device, dtypes, threads):
        self.calls.append((device, list(dtypes)))
        fields = fingerprint_fields(device, threads)
        return {"matmul_flops_per_s": {d: 1e9 * (i + 1) for i, d in enumerate(dtypes)},
                "copy_bytes_per_s": 5e9, "device": device, "measured_at": "now", "cached": False,
                "fingerprint": fingerprint_hash(fields), "fingerprint_fields": fields}


def test_cache_hit_miss_and_recalibrate(tmp_path):
    measure = FakeMeasure()
    first = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    assert first["cached"] is False and measure.calls == [("cpu", ["float32"])]
    path = cache_path(first["fingerprint"], tmp_path)
    assert path.name == f"calibration-{first['fingerprint']}.json" and path.exists()
    again = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    assert again["cached"] is True and len(measure.calls) == 1
    assert again["matmul_flops_per_s"] == first["matmul_flops_per_s"]
    calibrate("cpu", ["float32"], directory=tmp_path, measure=measure, recalibrate=True)
    assert len(measure.calls) == 2


def test_missing_dtypes_are_measured_and_merged(tmp_path):
    measure = FakeMeasure()
    calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    both = calibrate("cpu", ["float32", "bfloat16"], directory=tmp_path, measure=measure)
    assert measure.calls[-1] == ("cpu", ["bfloat16"])
    assert set(both["matmul_flops_per_s"]) == {"float32", "bfloat16"}
    assert calibrate("cpu", ["bfloat16"], directory=tmp_path, measure=measure)["cached"] is True


def test_a_calibration_taken_under_load_is_not_cached(tmp_path):
    class Loaded(FakeMeasure):
        def __call__(self, device, dtypes, threads):
            return {**super().__call__(device, dtypes, threads), "warnings": ["load 7 on 2 cores"]}

    measure = Loaded()
    first = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    assert first["cache_path"] is None and not list(tmp_path.iterdir())
    calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    assert len(measure.calls) == 2


def test_a_changed_fingerprint_is_a_miss(tmp_path):
    measure = FakeMeasure()
    one = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure, threads=1)
    two = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure, threads=2)
    assert one["fingerprint"] != two["fingerprint"] and len(measure.calls) == 2


def test_corrupt_cache_is_remeasured(tmp_path):
    measure = FakeMeasure()
    first = calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)
    cache_path(first["fingerprint"], tmp_path).write_text("{not json")
    assert calibrate("cpu", ["float32"], directory=tmp_path, measure=measure)["cached"] is False


def test_fingerprint_names_what_the_peak_depends_on():
    import torch

    fields = fingerprint_fields("cpu")
    assert fields["torch"] == torch.__version__ and fields["threads"] == torch.get_num_threads()
    assert {"cpu_model", "host", "device", "device_name", "calibration_version"} <= set(fields)


def test_peak_for_picks_the_cells_device():
    single = {"device": "cpu", "matmul_flops_per_s": {"float32": 1e11}, "copy_bytes_per_s": 1e10}
    assert peak_for(single, "cpu", "float32") == 1e11
    assert peak_for(single, "cuda", "float32") is None
    assert peak_for(single, "cpu", "bfloat16") is None
    assert peak_for(None, "cpu", "float32") is None
    multi = {**single, "devices": {"cpu": single, "cuda": {"device": "cuda", "matmul_flops_per_s": {"float16": 9e14}}}}
    assert peak_for(multi, "cuda", "float16") == 9e14


def test_calibrate_cases_covers_every_device_and_dtype(tmp_path):
    cases = [Case(variant="naive", seq_len=64, dtype=d, device=dev)
             for dev in ("cpu", "cuda") for d in ("float32", "bfloat16")]
    assert devices_and_dtypes(cases) == {"cpu": ["bfloat16", "float32"], "cuda": ["bfloat16", "float32"]}
    cpu_only = calibrate_cases(cases[:2], directory=tmp_path, measure=FakeMeasure())
    assert cpu_only["device"] == "cpu" and "devices" not in cpu_only
    assert set(cpu_only["matmul_flops_per_s"]) == {"float32", "bfloat16"}
    assert "float32" in describe(cpu_only) and "GFLOP/s" in describe(cpu_only)


def test_matmul_peak_is_two_n_cubed_over_the_median():
    measured = measure_matmul("float32", "cpu", budget_s=0.0, max_n=256)
    assert measured["n"] == 256 and matmul_flops(256) == 2 * 256 ** 3
    assert measured["flops_per_s"] == pytest.approx(matmul_flops(256) / statistics.median(measured["samples_s"]))
    assert len(measured["samples_s"]) >= 5


def test_copy_bandwidth_counts_read_and_write():
    measured = measure_copy("cpu", nbytes=1 << 20, budget_s=0.0)
    assert measured["copy_bytes"] == 2 * (1 << 20)
    assert measured["copy_bytes_per_s"] == pytest.approx(2 * (1 << 20) / statistics.median(measured["samples_s"]))


def test_stored_calibration_round_trips_as_json(tmp_path):
    first = calibrate("cpu", ["float32"], directory=tmp_path, measure=FakeMeasure())
    stored = json.loads(cache_path(first["fingerprint"], tmp_path).read_text())
    assert stored["matmul_flops_per_s"] == {"float32": 1e9} and stored["copy_bytes_per_s"] == 5e9


@pytest.mark.cuda
def test_cuda_calibration_in_a_spawned_process(tmp_path):
    import torch

    calibration = calibrate("cuda", ["float16"], directory=tmp_path)
    assert calibration["fingerprint_fields"]["device_name"] == torch.cuda.get_device_name()
    assert 1e12 < calibration["matmul_flops_per_s"]["float16"] < 1e16
    assert 1e11 < calibration["copy_bytes_per_s"] < 1e14

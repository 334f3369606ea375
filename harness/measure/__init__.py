"""Measuring one cell inside a worker: inputs, timing, statistics, memory, accuracy, telemetry,
calibration and profiling. `harness.measure.cell.measure_case` ties them together."""

"""Measuring one cell inside a worker: inputs, timing, statistics, memory, accuracy, telemetry,
calibration and profiling. `attnbench.measure.cell.measure_case` ties them together."""

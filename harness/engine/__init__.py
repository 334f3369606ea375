"""The sweep engine: the driver loop, isolated worker processes, executors and the environment fingerprint."""

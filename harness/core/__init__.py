"""Core types shared by every layer: `Case`, `Result`/`Run`, the `Variant` contract, its knobs,
the registry, errors and measurement settings. Nothing here imports torch at import time."""

"""Exports of a run: the tidy table as CSV, Parquet or JSON, and pytest-benchmark's JSON."""

from __future__ import annotations

import json
from pathlib import Path

from attnbench.core.errors import StoreError
from attnbench.store import LoadedRun, tidy_frame
from attnbench.store.pytest_benchmark import to_pytest_benchmark


def export_run(loaded: LoadedRun, fmt: str, output: Path) -> Path:
    """Write `loaded` to `output` in `fmt` (csv, parquet, json, pytest-benchmark)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pytest-benchmark":
        data = to_pytest_benchmark(loaded)
        output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return output
    frame = tidy_frame([loaded])
    try:
        if fmt == "csv":
            frame.to_csv(output, index=False)
        elif fmt == "parquet":
            frame.to_parquet(output, index=False)
        elif fmt == "json":
            output.write_text(frame.to_json(orient="records", indent=2), encoding="utf-8")
        else:
            raise StoreError(f"unknown export format {fmt!r}: expected csv, parquet, json or pytest-benchmark")
    except OSError as exc:
        raise StoreError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output

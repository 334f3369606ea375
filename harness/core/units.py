"""Numbers as people read them, the same in the terminal, the HTML report and a stored reason.

Standard library only, so the driver, the store, the reports and the CLI share one formatter.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def finite(value: Any) -> float | None:
    """`value` as a float, or None for None, a bool, text that is not a number, NaN and ±inf."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def three_digits(value: float) -> str:
    """'0.123', '12.3', '123', '1023': three significant digits, never an exponent from 100 up."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_bytes(value: Any) -> str:
    """'512 B', '1.5 KiB', '12.3 MiB', '1023 MiB', '3.25 GiB' (binary units); '–' when missing."""
    number = finite(value)
    if number is None:
        return MISSING
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(number) >= scale:
            return f"{three_digits(number / scale)} {unit}"
    return f"{number:.0f} B"


BYTE_UNITS = {"b": 1, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40,
              "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12}


def parse_bytes(value: Any) -> int:
    """512, '64MiB', '1.5 GiB', '2GB' -> bytes (binary KiB/MiB/GiB, decimal kB/MB/GB); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes such as 268435456 or '256MiB', got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):] or "b"
    try:
        amount = float(number)
    except ValueError:
        amount = None
    if amount is None or unit not in BYTE_UNITS or not math.isfinite(amount):
        raise ValueError(f"expected a size in bytes such as 268435456 or '256MiB' (units B, KiB, MiB, GiB, TiB, "
                         f"kB, MB, GB, TB), got {value!r}")
    return int(amount * BYTE_UNITS[unit])


def format_seconds(value: Any) -> str:
    """'1.5 s', '12.3 ms', '250 µs', '80 ns'; '–' when missing."""
    number = finite(value)
    if number is None:
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(number) >= scale:
            return f"{three_digits(number / scale)} {unit}"
    return f"{three_digits(number / 1e-9)} ns"


def kept_timing_text(status: str, median_s: Any) -> str | None:
    """'timed 1.20 ms (median; kept with the error)' for a failed cell that was timed before it failed, else None."""
    if status == "ok" or finite(median_s) is None:
        return None
    return f"timed {format_seconds(median_s)} (median; kept with the {status})"

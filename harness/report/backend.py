"""matplotlib for reports, drawn without a display: the Agg backend, chosen before pyplot is first imported.

The figure modules take `Figure` and seaborn from here, so the backend is set
however a report is reached (a caller that already imported pyplot keeps its own).
"""

from __future__ import annotations

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["Figure", "sns"]

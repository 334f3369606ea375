"""``clustered[:C]``: tokens around C shared centres per key/value head (Scatterbrain; default 8)."""

from __future__ import annotations

from attnbench.kinds.inputs.base import Parametrised

CLUSTERED = Parametrised("clustered", "clustered[:C] (tokens around C shared centres, default 8)",
                         default=8, integer=True)

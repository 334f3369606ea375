"""``local[:L]``: positional locality over about L tokens under RoPE (default 64)."""

from __future__ import annotations

from attnbench.kinds.inputs.base import Parametrised

LOCAL = Parametrised("local", "local[:L] (positional locality over about L tokens, default 64)",
                     default=64, integer=True)

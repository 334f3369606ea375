"""``sinks[:S]``: S leading keys every query attends to (StreamingLLM; default 4)."""

from __future__ import annotations

from attnbench.kinds.inputs.base import Parametrised

SINKS = Parametrised("sinks", "sinks[:S] (S leading keys every query attends to, default 4)",
                     default=4, integer=True)

"""The `inputs` axis of a case as text: which distribution q, k and v are drawn from.

``iid`` (the default: q, k ~ N(0, qk_std²), v ~ N(0, 1)), ``outliers[:RATE]``,
``clustered[:C]``, ``local[:L]``, ``sinks[:S]`` and ``file:PATH`` (tensors q,
k, v from a safetensors file). Pure Python (no torch), so a `Case` can check
its inputs wherever it is built; the generators are in
`attnbench.measure.distributions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import split_kind

INPUT_KINDS = ("iid", "outliers", "clustered", "local", "sinks", "file")
DEFAULT_PARAMETER: dict[str, float] = {"outliers": 0.001, "clustered": 8, "local": 64, "sinks": 4}
INTEGER_PARAMETER = frozenset({"clustered", "local", "sinks"})
INPUTS_HELP = ("iid (independent Gaussians), outliers[:RATE] (FlashAttention-3's N(0,1) + N(0,100)·Bernoulli(RATE), "
               "default 0.001), clustered[:C] (tokens around C shared centres, default 8), local[:L] (positional "
               "locality over about L tokens, default 64), sinks[:S] (S leading keys every query attends to, "
               "default 4), or file:PATH (q, k and v from a safetensors file)")


@dataclass(frozen=True)
class InputSpec:
    """A parsed `inputs` value: its kind, its parameter (None for iid and file) and, for file, the path."""

    kind: str = "iid"
    parameter: float | None = None
    path: str | None = None

    @property
    def text(self) -> str:
        if self.kind == "file":
            return f"file:{self.path}"
        if self.parameter is None or self.parameter == DEFAULT_PARAMETER.get(self.kind):
            return self.kind
        value = self.parameter
        return f"{self.kind}:{int(value) if float(value).is_integer() else value}"

    @property
    def value(self) -> float | None:
        """The parameter with its default filled in (None for iid and file)."""
        return self.parameter if self.parameter is not None else DEFAULT_PARAMETER.get(self.kind)


def parse_inputs(text: str) -> InputSpec:
    """'clustered:16' -> InputSpec('clustered', 16); ValueError saying what is accepted."""
    split = split_kind(text, "inputs", INPUT_KINDS, INPUTS_HELP, whole_arg=("file",))
    kind = split.kind
    if kind == "file":
        if not split.arg:
            raise split.error("needs a path after 'file:', e.g. file:captured/layer0.safetensors")
        return InputSpec("file", path=split.arg)
    if kind == "iid":
        split.bare("; its scale is qk_std", noun="parameter")
        return InputSpec()
    if split.arg is None and not split.options:
        return InputSpec(kind)
    value = split.number(f"{kind}:{DEFAULT_PARAMETER[kind]:g}")
    if kind in INTEGER_PARAMETER and (not value.is_integer() or value < 1):
        raise split.error(f"{kind} takes a whole number of at least 1")
    if kind == "outliers" and not 0 < value < 1:
        raise split.error("the outlier rate must be between 0 and 1, e.g. outliers:0.001")
    return InputSpec(kind, int(value) if kind in INTEGER_PARAMETER else value)

"""Attention maps for the report: each variant's weights on one small case, beside exact softmax.

`write_attention_maps` writes ``attention_maps.json`` into a run folder::

    {"seq_len": 64, "kv_len": 64, "head_dim": 16, "seed": 0, "note": "...",
     "exact": [[...]],                        # softmax(q kᵀ / √d), (seq_len, kv_len)
     "variants": {"longformer": [[...]]},     # variant.attention_weights, same shape
     "errors": {"performer": "ValueError: ..."},
     "no_weights": ["mamba-scan"]}            # variants whose attention_weights gave None

Values are rounded to 5 significant digits. The case is batch 1, one head,
non-causal, float32 inputs drawn as for any cell (`attnbench.measure.inputs.make_inputs`)
and upcast to float64, on the CPU.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnbench.core.case import Case
from attnbench.store.runs import ATTENTION_MAPS_FILE

SIGNIFICANT_DIGITS = 5


def write_attention_maps(run_path: Path, registry, variant_names: Iterable[str], seq_len: int = 64,
                         head_dim: int = 16, seed: int = 0) -> Path | None:
    """Compute the maps of `variant_names` and write them into `run_path`; None when no name is given.

    A variant that raises, returns the wrong shape or non-finite values is
    recorded under "errors" and the others go on.
    """
    import torch

    from attnbench.measure.inputs import make_inputs, upcast

    names = [name for name in dict.fromkeys(variant_names) if name]
    if not names:
        return None
    base_case = Case(variant="exact", seq_len=seq_len, batch=1, heads=1, head_dim=head_dim, dtype="float32",
                     causal=False, mode="fwd", device="cpu", seed=seed)
    inputs = upcast(make_inputs(base_case))
    q, k = inputs.q, inputs.k
    exact = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(head_dim), dim=-1)   # (1, 1, N, M)
    maps: dict[str, Any] = {
        "seq_len": seq_len, "kv_len": seq_len, "head_dim": head_dim, "seed": seed,
        "note": f"batch 1, one head, non-causal; q, k ~ N(0, 1), v ~ N(0, 1) drawn from seed {seed} in float32, "
                "upcast to float64; each variant at its default knobs",
        "exact": _rounded(exact[0, 0]),
        "variants": {}, "errors": {}, "no_weights": [],
    }
    for name in names:
        try:
            variant = registry.get(name)
        except Exception as exc:  # an unknown or broken plugin: record it, go on
            maps["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        case = Case(variant=name, seq_len=seq_len, batch=1, heads=1, head_dim=head_dim, dtype="float32",
                    causal=False, mode="fwd", device="cpu", seed=seed, params=dict(variant.params))
        try:
            with torch.no_grad():
                weights = variant.attention_weights(case, inputs)
        except Exception as exc:  # a variant's bug must not lose the other maps
            maps["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        if weights is None:
            maps["no_weights"].append(name)
            continue
        problem = _check(weights, seq_len)
        if problem:
            maps["errors"][name] = problem
            continue
        maps["variants"][name] = _rounded(weights.detach().to("cpu", torch.float64).reshape(seq_len, seq_len))
    path = Path(run_path) / ATTENTION_MAPS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(maps, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _check(weights, seq_len: int) -> str:
    import torch

    if not isinstance(weights, torch.Tensor):
        return f"attention_weights returned {type(weights).__name__}, not a tensor"
    if tuple(weights.shape) != (1, 1, seq_len, seq_len):
        return f"attention_weights returned shape {tuple(weights.shape)}, expected (1, 1, {seq_len}, {seq_len})"
    if not bool(torch.isfinite(weights).all()):
        return "attention_weights returned non-finite values"
    return ""


def _rounded(matrix) -> list[list[float]]:
    return [[float(f"{value:.{SIGNIFICANT_DIGITS}g}") for value in row] for row in matrix.tolist()]

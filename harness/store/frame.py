"""The tidy DataFrame: one row per stored cell, the table every export, table and plot reads.

Imports pandas when called, never torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from attnbench.store.runs import Cell, LoadedRun

TIDY_COLUMNS = (
    "run_id", "run_name", "case_id", "variant", "family", "computes", "approximates", "params", "execution",
    "batch", "heads", "kv_heads", "seq_len", "kv_len", "head_dim", "v_head_dim", "mask", "score_mod", "inputs", "kv_cache_bytes", "dtype", "causal", "mode", "device",
    "seed", "qk_std", "status", "reason",
    "time_median_s", "time_iqr_s", "time_ci_low_s", "time_ci_high_s", "reps", "calls_per_sample",
    "setup_s", "setup_compile_s", "setup_prepare_s", "setup_first_call_s", "warmup_s", "stop_reason", "contended",
    "peak_bytes_fwd", "peak_bytes_fwd_bwd", "predicted_bytes", "resident_bytes_fwd",
    "max_abs_error", "rel_l2_error", "max_rel_error", "nonfinite", "grad_max_rel_l2_error",
    "approx_max_abs_error", "approx_rel_l2_error", "approx_kl", "approx_entropy_ratio", "approx_topk_mass", "approx_dropped_mass",
    "accuracy_ok",
    "flops", "performed_flops", "flops_per_s", "peak_fraction", "arithmetic_intensity", "bytes_moved", "bytes_per_s", "bandwidth_fraction", "energy_j", "warnings",
    "task", "task_kind", "task_accuracy", "task_queries", "task_loss_first", "task_loss_last", "task_loss_min",
    "task_steps", "task_examples", "task_train_s", "task_parameters", "task_state_size",
)
TASK_COLUMNS = ("accuracy", "queries", "loss_first", "loss_last", "loss_min", "steps", "examples", "train_s",
                "parameters", "state_size")


def tidy_frame(runs: Iterable[LoadedRun]):
    """One row per cell of every run, with the columns of `TIDY_COLUMNS` plus one `param_<knob>` per knob."""
    import pandas as pd

    rows = [_tidy_row(loaded, cell) for loaded in runs for cell in loaded.cells]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(TIDY_COLUMNS))
    knob_columns = sorted(c for c in frame.columns if c.startswith("param_"))
    return frame[list(TIDY_COLUMNS) + knob_columns]


def _tidy_row(loaded: LoadedRun, cell: Cell) -> dict[str, Any]:
    case, result = cell.case, cell.result
    timing, memory, accuracy = result.timing, result.memory, result.accuracy
    params = case.get("params") or {}
    grads = accuracy.gradients if accuracy else {}
    fidelity = (accuracy.fidelity if accuracy else None) or {}
    row: dict[str, Any] = {
        "run_id": loaded.run.run_id,
        "run_name": loaded.run.name,
        "case_id": cell.case_id,
        "variant": case.get("variant"),
        "family": cell.meta.get("family"),
        "computes": cell.meta.get("computes"),
        "approximates": cell.meta.get("approximates"),
        "params": json.dumps(params, sort_keys=True),
        "execution": result.telemetry.get("execution"),
        **{key: case.get(key) for key in ("batch", "heads", "seq_len", "kv_len", "head_dim", "dtype",
                                          "causal", "mode", "device", "seed", "qk_std")},
        "kv_heads": case.get("kv_heads") or case.get("heads"),
        "v_head_dim": case.get("v_head_dim") or case.get("head_dim"),
        "mask": case.get("mask") or "none",
        "score_mod": case.get("score_mod") or "none",
        "kv_cache_bytes": case.get("kv_cache_bytes"),
        "inputs": case.get("inputs") or "iid",
        "status": result.status,
        "reason": result.reason,
        "time_median_s": timing.median_s if timing else None,
        "time_iqr_s": timing.iqr_s if timing else None,
        "time_ci_low_s": timing.ci_low_s if timing else None,
        "time_ci_high_s": timing.ci_high_s if timing else None,
        "reps": timing.reps if timing else None,
        "calls_per_sample": timing.calls_per_sample if timing else None,
        "setup_s": timing.setup_s if timing else None,
        **{f"setup_{part}": (result.telemetry.get("setup_parts") or {}).get(part)
           for part in ("compile_s", "prepare_s", "first_call_s")},
        "warmup_s": timing.warmup_s if timing else None,
        "stop_reason": timing.stop_reason if timing else None,
        "contended": timing.contended if timing else None,
        "peak_bytes_fwd": memory.peak_bytes_fwd if memory else None,
        "peak_bytes_fwd_bwd": memory.peak_bytes_fwd_bwd if memory else None,
        "predicted_bytes": memory.predicted_bytes if memory else None,
        "resident_bytes_fwd": memory.resident_bytes_fwd if memory else None,
        "max_abs_error": accuracy.output.max_abs_error if accuracy else None,
        "rel_l2_error": accuracy.output.rel_l2_error if accuracy else None,
        "max_rel_error": accuracy.output.max_rel_error if accuracy else None,
        "nonfinite": accuracy.output.nonfinite if accuracy else None,
        "grad_max_rel_l2_error": max((g.rel_l2_error for g in grads.values()), default=None),
        "approx_max_abs_error": accuracy.approx.max_abs_error if accuracy and accuracy.approx else None,
        "approx_rel_l2_error": accuracy.approx.rel_l2_error if accuracy and accuracy.approx else None,
        **{column: fidelity.get(column) for column in ("approx_kl", "approx_entropy_ratio", "approx_topk_mass")},
        "approx_dropped_mass": fidelity.get("dropped_mass"),
        "accuracy_ok": accuracy.ok if accuracy else None,
        "flops": result.flops,
        "performed_flops": result.performed_flops,
        "flops_per_s": result.flops_per_s,
        "peak_fraction": result.peak_fraction,
        "arithmetic_intensity": result.telemetry.get("arithmetic_intensity"),
        "bytes_moved": result.telemetry.get("bytes_moved"),
        "bytes_per_s": result.telemetry.get("bytes_per_s"),
        "bandwidth_fraction": result.telemetry.get("bandwidth_fraction"),
        "energy_j": result.telemetry.get("energy_j_per_call"),
        "warnings": "; ".join(result.warnings),
        "task": case.get("task") or "none",
        "task_kind": (case.get("task") or "none").partition(":")[0],
        **{f"task_{name}": getattr(result.task, name) if result.task else None for name in TASK_COLUMNS},
    }
    for knob, value in params.items():
        row[f"param_{knob}"] = value
    return row

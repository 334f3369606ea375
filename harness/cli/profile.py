"""`attnbench profile VARIANT --seq-len N [case options] [-o DIR]`: one case under torch.profiler."""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.core.case import DTYPES, MODES, Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.registry import default_registry
from attnbench.core.units import format_bytes
from attnbench.measure.profiling import check_supported, parse_params, profile_case


@click.command("profile")
@click.argument("variant")
@click.option("--seq-len", type=int, required=True, help="query length N")
@click.option("--kv-len", type=int, default=None, help="key/value length M (default: N)")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--heads", type=int, default=None, help="query heads (default: the preset's, else 8)")
@click.option("--head-dim", type=int, default=None, help="query/key head dim (default: the preset's, else 64)")
@click.option("--kv-heads", type=int, default=None, help="key/value heads (GQA/MQA; default: --heads)")
@click.option("--v-head-dim", type=int, default=None, help="value/output head dim (default: --head-dim)")
@click.option("--mask", default=None,
              help="none, sliding_window:W, document:K or prefix_lm:P (combines with --causal; default: the preset's, else none)")
@click.option("--preset", default=None, help="take heads, kv_heads, head dims, causal and mask from a model "
              "(attnbench list --presets); the flags above override it")
@click.option("--score-mod", default="none", show_default=True, help="none, alibi or softcap:C")
@click.option("--inputs", default="iid", show_default=True,
              help="iid, outliers[:RATE], clustered[:C], local[:L], sinks[:S] or file:PATH")
@click.option("--dtype", default="float32", show_default=True, help=f"one of {', '.join(DTYPES)} (or fp32, bf16...)")
@click.option("--causal/--no-causal", default=None, help="causal mask (default: the preset's, else off)")
@click.option("--mode", type=click.Choice(MODES), default="fwd", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a knob of the variant (repeatable)")
@click.option("--steps", type=int, default=3, show_default=True, help="calls profiled (after warm-up)")
@click.option("--warmup", "warmup_calls", type=int, default=3, show_default=True, help="calls before profiling")
@click.option("--top", type=int, default=15, show_default=True, help="operators shown in the table")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="folder for trace.json, ops.csv, memory.json (default: profiles/<case label>)")
def profile_command(variant, seq_len, kv_len, batch, heads, head_dim, kv_heads, v_head_dim, mask, preset, score_mod, inputs, dtype, causal, mode, device, seed,
                    params, steps, warmup_calls, top, output) -> None:
    """Profile one case of VARIANT under torch.profiler: a Chrome trace, the top operators, the memory peak."""
    registry = default_registry()
    implementation = registry.get(variant)
    knobs = {**implementation.params, **parse_params(params, implementation.knobs, variant)}
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if steps < 1 or warmup_calls < 0:
        raise AttnbenchError("--steps must be at least 1 and --warmup at least 0")
    shape = _shape(preset, heads=heads, kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim,
                   mask=mask, causal=causal)
    try:
        case = Case(variant=variant, seq_len=seq_len, kv_len=kv_len, batch=batch, score_mod=score_mod, inputs=inputs,
                    dtype=dtype, mode=mode, device=device, seed=seed, params=knobs, **shape)
    except ValueError as exc:
        raise AttnbenchError(f"invalid case: {exc}") from None
    check_supported(case, implementation)
    out_dir = Path(output) if output else Path("profiles") / case.label
    try:
        summary = profile_case(case, implementation, out_dir, steps=steps, warmup_calls=warmup_calls)
    except AttnbenchError:
        raise
    except Exception as exc:  # the variant failed while running: not the user's input, an internal error (exit 4)
        raise RuntimeError(f"profiling {case.label} failed: {type(exc).__name__}: {exc}") from exc
    print_profile(summary, top)


def _shape(preset: str | None, **given) -> dict:
    """The case's shape fields: the flags given, else the preset's, else the defaults (8 heads, d 64, no mask)."""
    from attnbench.core.presets import get_preset

    fields = {"heads": 8, "kv_heads": None, "head_dim": 64, "v_head_dim": None, "mask": "none", "causal": False}
    if preset is not None:
        try:
            fields.update(get_preset(preset).fields())
        except ValueError as exc:
            raise AttnbenchError(f"--preset: {exc}") from None
        if given.get("head_dim") is not None and given.get("v_head_dim") is None:
            fields["v_head_dim"] = None                      # a head dim given on the command line is dv's too
    fields.update({key: value for key, value in given.items() if value is not None})
    return fields


def print_profile(summary, top: int = 15) -> None:
    from attnbench.core.markup import safe
    from attnbench.core.terminal import TextTable, make_console, print_table

    console = make_console()
    unit = "device" if summary.sort_key == "self_device_s" else "CPU"
    columns = ("operator", "calls", "self CPU ms", "CPU total ms", "self device ms", "share", "self CPU mem")
    rows = [(row["name"], str(row["calls"]), f"{row['self_cpu_s'] * 1e3:.3f}", f"{row['cpu_total_s'] * 1e3:.3f}",
             f"{row['self_device_s'] * 1e3:.3f}", f"{row['share_of_self_time']:.1%}",
             format_bytes(row["self_cpu_memory_bytes"])) for row in summary.ops[:top]]
    print_table(TextTable.of(f"{summary.case.label}: top operators by self {unit} time over {summary.steps} steps",
                             columns, rows, numeric=columns[1:]), console)
    for device, info in summary.memory["devices"].items():
        console.print(f"memory peak on {safe(device)}: [bold]{format_bytes(info['peak_bytes'])}[/bold] live, allocated inside "
                      f"the profiled steps (inputs excluded); reached in {safe(info['peak_op'])}", highlight=False,
                      soft_wrap=True)
        for row in info["live_at_peak"][:5]:
            console.print(f"  {format_bytes(row['bytes']):>10}  in {row['count']} allocation(s) by {safe(row['op'])}",
                          highlight=False, soft_wrap=True)
    for name, path in summary.files.items():
        console.print(f"{safe(name)}: {safe(path)}", highlight=False, soft_wrap=True)

"""`attnbench profile VARIANT --seq-len N [case options] [-o DIR]`: one case under torch.profiler."""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.core.axes import AXES
from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.registry import default_registry
from attnbench.core.units import format_bytes
from attnbench.measure.profiling import check_supported, parse_params, profile_case


def axis_options(command):
    """One option per axis that declares a `flag` (`attnbench.core.axes`), each defaulting to the preset's
    value, else the axis's default; a boolean axis is a ``--flag/--no-flag`` pair."""
    for axis in reversed([a for a in AXES if a.flag]):
        name = axis.flag.removeprefix("--")
        default = axis.defaults_from and f"--{axis.defaults_from.replace('_', '-')}" or axis.default
        help_text = f"{axis.doc} (default: {default})" if default is not None else axis.doc
        if axis.kind is bool:
            command = click.option(f"{axis.flag}/--no-{name}", axis.name, default=None, help=help_text)(command)
        elif axis.choices:
            choices = (*axis.choices, "auto") if axis.name == "device" else axis.choices
            command = click.option(axis.flag, axis.name, type=click.Choice(choices), default=None,
                                   help=help_text)(command)
        else:
            required = axis.default is None and axis.defaults_from is None and axis.in_case
            command = click.option(axis.flag, axis.name, type=axis.kind if axis.parse is None else str,
                                   default=None, required=required, help=help_text)(command)
    return command


@click.command("profile")
@click.argument("variant")
@axis_options
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a knob of the variant (repeatable)")
@click.option("--steps", type=int, default=3, show_default=True, help="calls profiled (after warm-up)")
@click.option("--warmup", "warmup_calls", type=int, default=3, show_default=True, help="calls before profiling")
@click.option("--top", type=int, default=15, show_default=True, help="operators shown in the table")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="folder for trace.json, ops.csv, memory.json (default: profiles/<case label>)")
def profile_command(variant, params, steps, warmup_calls, top, output, preset, **axes) -> None:
    """Profile one case of VARIANT under torch.profiler: a Chrome trace, the top operators, the memory peak."""
    registry = default_registry()
    implementation = registry.get(variant)
    knobs = {**implementation.params, **parse_params(params, implementation.knobs, variant)}
    if axes["device"] == "auto":
        import torch

        axes["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if steps < 1 or warmup_calls < 0:
        raise AttnbenchError("--steps must be at least 1 and --warmup at least 0")
    try:
        case = Case(variant=variant, params=knobs, **_case_fields(preset, axes))
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


def _case_fields(preset: str | None, given: dict) -> dict:
    """The case's axes: the flags given, else the preset's, else each axis's default."""
    from attnbench.core.presets import get_preset

    fields = {name: AXES[name].default for name in given}
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

"""`attnbench list`: every registered variant on one line (name, family, available here or why not), and one
variant in full (`list NAME`, or all with `--verbose`): what it computes, its knobs and every reason per device.

The rows are the `--json` content (`variant_rows`), so the three views never disagree.
"""

from __future__ import annotations

from typing import Any

from attnbench.core.terminal import make_console, shorten

DEVICES = ("cpu", "cuda")
LINE_WIDTH = 100
NAME_WIDTH = 18
FAMILY_WIDTH = 12
MIN_REASON = 24


def variant_rows(registry) -> list[dict[str, Any]]:
    """One dict per registered variant: the content of `attnbench list --json`."""
    rows = []
    for name in registry.names():
        variant = registry.get(name)
        availability = {}
        for device in DEVICES:
            try:
                reasons = variant.unsupported_reasons(variant.probe_case(device))
            except Exception as exc:  # a plugin's bug must not hide the others
                reasons = [f"unsupported_reasons raised {type(exc).__name__}: {exc}"]
            availability[device] = reasons
        rows.append({"name": name, "family": variant.family, "computes": variant.computes,
                     "approximates": variant.approximates, "params": dict(variant.params),
                     "knobs": {knob: spec.to_dict() for knob, spec in variant.knobs.items()},
                     "dtypes": list(variant.dtypes), "distribution": registry.origins.get(name),
                     "description": variant.description,
                     "available": {d: not r for d, r in availability.items()}, "reasons": availability})
    return rows


def failure_rows(registry) -> list[dict[str, Any]]:
    """Plugins that failed to load: entry point, target, distribution and error."""
    return [{"entry_point": f.entry_point, "target": f.target, "distribution": f.distribution, "error": f.error}
            for f in registry.failures]


def here_text(row: dict[str, Any], cuda_here: bool, width: int) -> tuple[str, bool]:
    """('cpu, cuda', True) where the variant runs on this machine, else ('no: <its first reason, cut>', False).

    The reason is the one of the device that matters here: CUDA on a CUDA machine, else the CPU.
    """
    devices = [d for d in DEVICES if row["available"][d] and (d != "cuda" or cuda_here)]
    if devices:
        return ", ".join(devices), True
    reasons = row["reasons"]["cuda" if cuda_here else "cpu"] or row["reasons"]["cpu"] or ["not available"]
    return "no: " + shorten(reasons[0], max(width - 4, 8)), False


def one_line_listing(rows: list[dict[str, Any]], failures: list[dict[str, Any]], cuda_here: bool) -> list[
        tuple[str, str | None]]:
    """(text, style) lines: a header, then one line per variant within LINE_WIDTH columns (longer names
    excepted), then one line per failed plugin."""
    name_w = max([len("variant"), *(min(len(r["name"]), NAME_WIDTH) for r in rows)])
    family_w = max([len("family"), *(min(len(str(r["family"])), FAMILY_WIDTH) for r in rows)])
    available = sum(here_text(r, cuda_here, LINE_WIDTH)[1] for r in rows)
    machine = "cpu and cuda" if cuda_here else "cpu; torch sees no CUDA device"
    lines: list[tuple[str, str | None]] = [
        (f"{len(rows)} variants, {available} available here ({machine})", None),
        (f"{'variant'.ljust(name_w)}  {'family'.ljust(family_w)}  here", "bold")]
    for row in rows:
        start = f"{row['name'].ljust(name_w)}  {str(row['family']).ljust(family_w)}  "
        text, ok = here_text(row, cuda_here, max(LINE_WIDTH - len(start), MIN_REASON))
        lines.append((start + text, None if ok else "red"))
    for failure in failures:
        lines.append((f"plugin {failure['entry_point']!r} from {failure['distribution']!r} failed to load: "
                      + shorten(failure["error"], 60), "red"))
    lines.append(("attnbench list NAME: one variant in full (knobs and their docs, every reason); --verbose: all",
                  None))
    return lines


def detail_lines(row: dict[str, Any]) -> list[str]:
    """Everything `list --json` holds about one variant, as text."""
    lines = [f"{row['name']}: family {row['family']}, computes {row['computes']}"
             + (f", approximates {row['approximates']}" if row["approximates"] else "")]
    if row["description"]:
        lines.append(f"  {' '.join(str(row['description']).split())}")
    lines.append(f"  from: {row['distribution'] or 'unknown distribution'}")
    lines.append(f"  dtypes: {', '.join(row['dtypes'])}")
    if row["knobs"]:
        lines.append("  knobs:")
        lines.extend(f"    {knob_line(knob, spec)}" for knob, spec in row["knobs"].items())
    else:
        lines.append("  knobs: none")
    for device in DEVICES:
        reasons = row["reasons"][device]
        if not reasons:
            lines.append(f"  {device}: available")
            continue
        lines.append(f"  {device}: not available")
        lines.extend(f"    - {reason}" for reason in reasons)
    return lines


def knob_line(name: str, spec: dict) -> str:
    """'features=256 (int >= 1): m, the number of random features'."""
    allowed = spec["type"]
    if spec["choices"] is not None:
        allowed += " in " + "|".join(str(c) for c in spec["choices"])
    elif spec["minimum"] is not None and spec["maximum"] is not None:
        allowed += f" {spec['minimum']}..{spec['maximum']}"
    elif spec["minimum"] is not None:
        allowed += f" >= {spec['minimum']}"
    elif spec["maximum"] is not None:
        allowed += f" <= {spec['maximum']}"
    line = f"{name}={spec['default']} ({allowed})"
    return f"{line}: {spec['doc']}" if spec["doc"] else line


def print_listing(rows, failures, cuda_here: bool, names: tuple[str, ...] = (), verbose: bool = False) -> None:
    """The one-line listing, or the named variants (all with `verbose`) in full; failed plugins in full
    with `verbose`."""
    from rich.text import Text

    console = make_console()

    def say(text: str, style: str | None = None) -> None:
        console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)

    if not names and not verbose:
        for text, style in one_line_listing(rows, failures, cuda_here):
            say(text, style)
        return
    chosen = [r for r in rows if r["name"] in names] if names else rows
    for index, row in enumerate(chosen):
        if index:
            say("")
        for line in detail_lines(row):
            say(line)
    if verbose or not names:
        for failure in failures:
            say(f"plugin {failure['entry_point']!r} ({failure['target']}) from {failure['distribution']!r} "
                f"failed to load: {failure['error']}", "red")


def check_names(registry, names: tuple[str, ...]) -> None:
    """Raise the registry's UnknownVariantError (exit 2, with 'did you mean') for a name it does not hold."""
    for name in names:
        registry.get(name)


__all__ = ["check_names", "detail_lines", "failure_rows", "here_text", "knob_line", "one_line_listing",
           "print_listing", "variant_rows"]

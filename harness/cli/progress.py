"""Terminal output of a run: a live progress bar while it runs, summary tables when it ends."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.core.case import Case
from harness.core.markup import safe
from harness.core.units import finite, format_bytes, format_seconds, kept_timing_text
from harness.store import load_run, tidy_frame
from harness.store.quality import kernel_rows, recall_summary

STATUS_STYLE = {"ok": "green", "unsupported": "dim", "skipped": "yellow", "oom": "red", "timeout": "red",
                "crashed": "red", "error": "red"}
WORKLOAD_KEYS = ("device", "dtype", "mode", "causal", "batch", "heads", "head_dim")


class SweepProgress:
    """A rich progress bar fed by the sweep's progress events: the cell in flight and the count done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[cell]}"), console=self.console,
                                  transient=False)
        self._task = None

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def __call__(self, event: str, **data) -> None:
        if event == "start":
            self.console.print(f"run folder: {safe(data['run_path'])}  ({data['todo']} cells to run, "
                               f"{data['done']} already stored)")
            self._task = self._progress.add_task("cells", total=data["todo"], cell="")
        elif event == "cell" and self._task is not None:
            self._progress.update(self._task, cell=safe(data["case"].label))
        elif event == "step" and self._task is not None:
            self._progress.update(self._task, cell=f"{safe(data['case'].label)}  step {data['step']}/{data['steps']}"
                                                  f"  loss {data['loss']:.3f}")
        elif event == "done" and self._task is not None:
            result = data["result"]
            if result.status != "ok":
                style = STATUS_STYLE.get(result.status, "red")
                self._progress.console.print(f"[{style}]{result.status}[/{style}] {safe(data['case'].label)}: "
                                             f"{safe(result.reason[:200])}", highlight=False)
            self._progress.advance(self._task)


def _cell_text(row, full: bool) -> str:
    if row.status != "ok":
        kept = kept_timing_text(row.status, row.time_median_s)
        return _status_text(row, full) + (f"\n{kept}" if kept else "")
    low, high = finite(row.time_ci_low_s), finite(row.time_ci_high_s)
    if low is not None and high is not None and row.time_median_s:
        text = f"{format_seconds(row.time_median_s)} ±{(high - low) / 2 / row.time_median_s * 100:.1f}%"
    else:
        text = f"{format_seconds(row.time_median_s)} (n={int(row.reps)}, no interval)"
    if finite(row.peak_bytes_fwd) is not None:
        text += f"\n{format_bytes(row.peak_bytes_fwd)}"
    if finite(row.rel_l2_error) is not None:
        text += f"\nerr {row.rel_l2_error:.1e}"
    if is_inaccurate(row.accuracy_ok):
        text += "\n[red]inaccurate[/red]"
    return text


def is_inaccurate(accuracy_ok) -> bool:
    """True only for a stored verdict of False (None or NaN: accuracy not judged)."""
    return accuracy_ok is not None and accuracy_ok == accuracy_ok and not bool(accuracy_ok)


def print_summary(run_path: Path, full: bool = False, console: Console | None = None) -> None:
    """Tables per workload (variants × seq_len): median time ±CI half-width, peak memory, error."""
    console = console or Console()
    loaded = load_run(run_path)
    for problem in loaded.problems:
        console.print(f"[yellow]warning:[/yellow] {safe(problem)}", highlight=False)
    everything = tidy_frame([loaded])
    console.print(f"run [bold]{safe(loaded.run.run_id)}[/bold] ({safe(loaded.run.name)}, suite {safe(loaded.run.suite_name)}) "
                  f"status {loaded.status}, {len(everything)} cells")
    if everything.empty:
        console.print(f"run folder: {safe(run_path)}")
        return
    _print_quality(everything, console, full)
    frame = kernel_rows(everything)
    frame = frame.assign(label=[_variant_label(v, p) for v, p in zip(frame.variant, frame.params, strict=True)])
    for workload, group in frame.groupby(list(WORKLOAD_KEYS), sort=True, dropna=False):
        title = ", ".join(f"{k}={v}" for k, v in zip(WORKLOAD_KEYS, workload, strict=True))
        console.print(_length_table(title, group, lambda row: _cell_text(row, full)))
    counts = everything.status.value_counts().to_dict()
    console.print("cells by status: " + ", ".join(f"{safe(k)} {v}" for k, v in sorted(counts.items())))
    inaccurate = [cell for cell in loaded.cells if cell.result.accuracy is not None and cell.result.accuracy.ok is False]
    if inaccurate:
        console.print(f"[red]inaccurate cells: {len(inaccurate)}[/red] (error over the variant's declared tolerance)",
                      highlight=False)
        for cell in inaccurate[:None if full else 10]:
            failures = "; ".join(cell.result.accuracy.failures)
            console.print(f"  [red]inaccurate[/red] {safe(Case.from_dict(cell.case).label)}: {safe(failures)}",
                          highlight=False)
        if not full and len(inaccurate) > 10:
            console.print(f"  ... and {len(inaccurate) - 10} more (attnbench show RUN lists them all)")
    console.print(f"run folder: {safe(run_path)}")


QUALITY_KEYS = ("task", "device", "dtype", "batch", "heads", "head_dim")


def _print_quality(frame, console: Console, full: bool) -> None:
    """Quality cells: per task and width, recall (mean over seeds, with their range) per variant and seq_len."""
    summary = recall_summary(frame)
    if summary.empty:
        return
    summary = summary.assign(label=[_variant_label(v, p) for v, p in zip(summary.variant, summary.params, strict=True)])
    for key, group in summary.groupby(list(QUALITY_KEYS), sort=True, dropna=False):
        task, device, dtype, batch, heads, head_dim = key
        title = (f"recall: {task.partition(':')[0]} ({task.partition(':')[2]}), {device} {dtype}, "
                 f"batch {batch}, d_model {heads * head_dim} = {heads}×{head_dim}")
        console.print(_length_table(title, group, lambda row: _quality_text(row, full)))


def _length_table(title: str, group, cell_text) -> Table:
    """A row per variant label, a column per seq_len, each cell `cell_text(row)` (empty where not run)."""
    lengths = sorted(group.seq_len.unique())
    table = Table(title=safe(title), show_lines=True)
    table.add_column("variant")
    for length in lengths:
        table.add_column(f"N={length}", justify="right")
    for label, rows in group.groupby("label", sort=True):
        by_length = {row.seq_len: row for row in rows.itertuples()}
        table.add_row(safe(label), *[cell_text(by_length[n]) if n in by_length else "" for n in lengths])
    return table


def _status_text(row, full: bool) -> str:
    """A cell that did not finish: its status, and its reason (cut to 40 characters unless `full`)."""
    style = STATUS_STYLE.get(row.status, "red")
    reason = row.reason if full else row.reason[:40]
    return f"[{style}]{row.status}[/{style}]" + (f": {safe(reason)}" if row.status != "unsupported" or full else "")


def _quality_text(row, full: bool) -> str:
    if row.status != "ok":
        return _status_text(row, full)
    text = f"recall {row.recall:.3f}"
    if row.seeds_ok > 1:
        text += f"\n{row.recall_min:.3f}–{row.recall_max:.3f} ({row.seeds_ok} seeds)"
    elif row.seeds > row.seeds_ok:
        text += f" ({row.seeds_ok}/{row.seeds} seeds)"
    text += f"\nloss {row.loss_last:.3f}, {format_seconds(row.train_s)} train"
    if finite(row.state_size) is not None:
        text += f"\nstate {int(row.state_size):,}"
    if finite(row.time_median_s) is not None:
        text += f"\ncall {format_seconds(row.time_median_s)}"
    return text


def _variant_label(variant: str, params_json: str) -> str:
    params = json.loads(params_json) if params_json else {}
    if not params:
        return variant
    return f"{variant} ({', '.join(f'{k}={v}' for k, v in params.items())})"

"""Build the HTML report of one or more runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnbench.core.errors import AttnbenchError
from attnbench.core.machine import package_version
from attnbench.core.names import safe_file_stem
from attnbench.core.units import finite
from attnbench.report import plots
from attnbench.report.analysis import contended_cells, crossovers, quality_views
from attnbench.report.breakeven import break_even_rows
from attnbench.report.data import DECODE_MAX_Q_LEN, ReportData, attention_maps, prepare
from attnbench.report.headline import headlines
from attnbench.report.ragged import ragged_views
from attnbench.report.render import render, write_html
from attnbench.report.runcard import run_card, when
from attnbench.report.tables import failures, inaccurate_cells, workload_table
from attnbench.report.tasks import task_failures, task_groups
from attnbench.store import LoadedRun


def default_report_path(runs: Sequence[LoadedRun]) -> Path:
    """reports/<run-name>.html (relative to the working directory); several runs join their names.

    The name goes through `safe_file_stem`: it is data, never a path (see `report_file_name`).
    """
    return report_file_name(runs)[0]


def report_file_name(runs: Sequence[LoadedRun]) -> tuple[Path, str | None]:
    """`(reports/<safe-stem>.html, note)`: the default report path and what sanitising changed (or None)."""
    names = [r.run.name or r.run.run_id for r in runs]
    stem = "+".join(dict.fromkeys(names)) if len(runs) > 1 else (runs[0].run.name or runs[0].run.run_id)
    safe, note = safe_file_stem(stem, max_len=120, fallback="report")
    if note is not None:
        note = f"run {note}"
    return Path("reports") / f"{safe}.html", note


def build_report_html(runs: Sequence[LoadedRun], baseline: str | None = None) -> str:
    """The report of `runs` as one self-contained HTML page: the answers per workload first, then the detail."""
    if not runs:
        raise AttnbenchError("no run to report on; give at least one RUN")
    data = prepare(runs, baseline)
    frame = data.frame
    kinds = dict(zip(frame.get("series", []), frame.get("kind", []), strict=True))
    styles = plots.Styles(list(frame.get("series", [])), list(data.run_labels.values()), kinds=kinds)
    crossover_rows, crossover_notes = crossovers(data)
    answers = headlines(data, crossover_rows)
    workloads = []
    for (workload, rows), answer in zip(data.workloads(), answers, strict=True):
        dtype = str(rows["dtype"].iloc[0])
        peaks, bandwidth = _peaks(data, dtype)
        several = not answer.one_length
        workloads.append({
            "workload": workload, "anchor": answer.anchor, "answer": answer,
            "table": workload_table(data, workload, rows),
            "overview": plots.overview_figure(rows, styles, data.multi_run) if several else None,
            "figure": plots.workload_figure(rows, styles, data.multi_run, data.baseline, peaks, bandwidth)
            if several else None})
    quality = []
    for view in quality_views(data):
        title = f"{view.workload} · {view.length_axis} {view.length}"
        quality.append({"workload": view.workload, "length": f"{view.length_axis} {view.length}",
                        "frontier": view.frontier,
                        "uri": plots.quality_figure(view.points, styles, data.multi_run, view.baseline_times, title)})
    contended = contended_cells(data)
    inaccurate = inaccurate_cells(data)
    title = "attnbench report: " + ", ".join(data.run_labels[r.run.run_id] for r in data.runs)
    return render(
        "report.html",
        title=title,
        subtitle=data.baseline_note,
        version=package_version("attnbench") or "unknown",
        built_at=when(dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        runs=[_card(data, r, contended, inaccurate) for r in data.runs],
        multi_run=data.multi_run,
        decode_max_q_len=DECODE_MAX_Q_LEN,
        workloads=workloads,
        baseline=data.baseline,
        baseline_note=data.baseline_note,
        crossovers=crossover_rows,
        crossover_notes=crossover_notes,
        break_even=break_even_rows(data),
        ragged=ragged_views(data.frame),
        quality=quality,
        tasks=_task_items(data),
        task_failures=task_failures(data),
        attention=[_attention_item(data, r) for r in data.runs],
        failures=failures(data),
        inaccurate=inaccurate,
        inaccurate_count=len({row["cell"] for row in inaccurate}),
        contended=contended,
    )


def _card(data: ReportData, loaded: LoadedRun, contended: list[dict[str, str]], inaccurate: list[dict[str, Any]]):
    label = data.run_labels[loaded.run.run_id]
    flagged = len([c for c in contended if not data.multi_run or c["run"] == label])
    wrong = len({row["cell"] for row in inaccurate if not data.multi_run or row["run"] == label})
    return run_card(loaded, label, contended=flagged, inaccurate=wrong)


def write_report(runs: list[LoadedRun], output: Path | None = None, baseline: str | None = None) -> Path:
    """Write the report of `runs` to `output` (default `default_report_path`) and return its path.

    Raises AttnbenchError for a baseline that is not in the runs or an output that cannot be written.
    """
    output = Path(output) if output is not None else default_report_path(runs)
    html = build_report_html(runs, baseline)
    try:
        return write_html(html, output)
    except OSError as exc:
        raise AttnbenchError(f"cannot write the report to {output}: {exc.strerror or exc}; "
                             "choose another path with -o") from None


def _peaks(data: ReportData, dtype: str) -> tuple[dict[str, float], float | None]:
    peaks: dict[str, float] = {}
    bandwidth = None
    for loaded in data.runs:
        calibration = loaded.run.calibration or {}
        rate = finite((calibration.get("matmul_flops_per_s") or {}).get(dtype))
        if rate is not None and rate > 0:
            peaks[data.run_labels[loaded.run.run_id]] = rate
            copy = finite(calibration.get("copy_bytes_per_s"))
            if bandwidth is None and copy is not None and copy > 0:
                bandwidth = copy
    return peaks, bandwidth


def _task_items(data: ReportData) -> list[dict[str, Any]]:
    """Per task group: its title, task text, table, frontier and figure (empty without quality cells)."""
    groups = task_groups(data)
    if not groups:
        return []
    styles = plots.Styles(list(data.tasks["series"]), list(data.run_labels.values()))
    return [{"title": g.title, "task": g.task, "seq_lens": g.seq_lens, "rows": g.table, "frontier": g.frontier,
             "longest": g.longest,
             "uri": plots.task_figure(g.rows, styles, data.multi_run, g.longest, g.title, g.chance)}
            for g in groups]


def _attention_item(data: ReportData, loaded: LoadedRun) -> dict[str, Any]:
    label = data.run_labels[loaded.run.run_id]
    try:
        maps = attention_maps(loaded)
    except AttnbenchError as exc:
        return {"label": label, "uri": None, "missing": str(exc)}
    if maps is None:
        return {"label": label, "uri": None,
                "missing": f"This run has no attention_maps.json in {loaded.path}, so there are no maps to show."}
    errors = sorted((str(k), str(v)) for k, v in (maps.get("errors") or {}).items())
    try:
        uri = plots.attention_maps_figure(maps)
    except (TypeError, ValueError) as exc:
        return {"label": label, "uri": None, "missing": f"attention_maps.json could not be drawn: {exc}"}
    note = str(maps.get("note") or "")
    no_weights = [str(name) for name in maps.get("no_weights") or []]
    return {"label": label, "uri": uri, "errors": errors, "seq_len": maps.get("seq_len"),
            "kv_len": maps.get("kv_len"), "note": note, "no_weights": ", ".join(no_weights)}

"""The answers a report opens with, per workload: at each swept length the fastest exact variant (and the
next one), the one with the least memory, the approximations on the quality–cost frontier with their
error, the fastest other function; then the crossover lengths, in sentences.

Contended cells (timed while descheduled) and inaccurate cells (over their tolerance) win nothing: their
times are not a correct kernel's, uncontended. An approximation is on the frontier at a length when it
is faster than the fastest exact variant there (which has no approximation error) and no other
approximation is both faster and closer to exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from attnbench.core.units import finite, format_bytes, format_seconds
from attnbench.report.analysis import Crossover, contended_mask
from attnbench.report.data import ReportData, length_axis
from attnbench.report.fits import pareto_frontier
from attnbench.report.tables import format_error, is_inaccurate


@dataclass(frozen=True)
class LengthAnswer:
    """One swept length of one run: who wins it, as text."""

    run: str
    length: int
    fastest: str
    fastest_time: str
    runner_up: str
    least_memory: str
    approximations: tuple[str, ...]
    other: str


@dataclass(frozen=True)
class Headline:
    """One workload's answers, and what they leave out."""

    workload: str
    anchor: str
    length_axis: str
    lengths: tuple[int, ...]
    answers: tuple[LengthAnswer, ...]
    crossovers: tuple[str, ...]
    notes: tuple[str, ...]
    has_other: bool

    @property
    def one_length(self) -> bool:
        return len(self.lengths) < 2


def workload_anchor(index: int) -> str:
    """The HTML id of the n-th workload's table (its plots take '-plots')."""
    return f"workload-{index + 1}"


def headlines(data: ReportData, crossover_rows: list[Crossover]) -> list[Headline]:
    """The answers of every workload, in `data.workloads()` order."""
    found = []
    for index, (workload, rows) in enumerate(data.workloads()):
        trusted = _trusted(rows)
        answers = []
        for (run, length), group in trusted.groupby(["run", "length"], sort=True):
            answers.append(_answer(str(run) if data.multi_run else "", int(length), group))
        notes = _left_out(rows, trusted, length_axis(rows))
        if not answers:
            notes.append("no cell of this workload finished with a trusted time")
        found.append(Headline(
            workload=workload, anchor=workload_anchor(index), length_axis=length_axis(rows),
            lengths=tuple(sorted(int(n) for n in rows["length"].unique())), answers=tuple(answers),
            crossovers=tuple(_crossover_sentences([c for c in crossover_rows if c.workload == workload],
                                                  data.baseline, length_axis(rows), data.multi_run)),
            notes=tuple(notes), has_other=bool((trusted["kind"] == "other").any())))
    return found


def _left_out(rows: pd.DataFrame, trusted: pd.DataFrame, axis: str) -> list[str]:
    """'Left out (contended): mamba-scan at seq_len 1024, 4096.' and the same for inaccurate cells."""
    ok = rows[(rows["status"] == "ok") & ~rows.index.isin(trusted.index)]
    notes = []
    for why, mask in (("contended", contended_mask(ok)),
                      ("inaccurate", ok["accuracy_ok"].map(is_inaccurate).to_numpy(dtype=bool))):
        named = ok[mask]
        if named.empty:
            continue
        parts = [f"{series} at {axis} {', '.join(str(int(n)) for n in sorted(group['length']))}"
                 for series, group in named.groupby("series", sort=True)]
        notes.append(f"Left out ({why}): {'; '.join(parts)}.")
    return notes


def _trusted(rows: pd.DataFrame) -> pd.DataFrame:
    """The ok cells with a time, neither contended nor inaccurate."""
    ok = rows[(rows["status"] == "ok") & pd.to_numeric(rows["time_median_s"], errors="coerce").gt(0)]
    keep = ~contended_mask(ok) & ~ok["accuracy_ok"].map(is_inaccurate).to_numpy(dtype=bool)
    return ok[keep]


def _answer(run: str, length: int, group: pd.DataFrame) -> LengthAnswer:
    exact = group[group["kind"] == "exact"].sort_values("time_median_s", kind="stable")
    fastest = exact.iloc[0] if len(exact) else None
    runner_up = "–"
    if len(exact) > 1:
        second = exact.iloc[1]
        runner_up = (f"{second['series']} {format_seconds(second['time_median_s'])} "
                     f"({_times(second['time_median_s'] / fastest['time_median_s'])} slower)")
    least = "–"
    sized = exact[pd.to_numeric(exact["peak_bytes"], errors="coerce").notna()]
    if len(sized):
        smallest = sized.sort_values("peak_bytes", kind="stable").iloc[0]
        least = f"{smallest['series']} {format_bytes(smallest['peak_bytes'])}"
    others = group[group["kind"] == "other"].sort_values("time_median_s", kind="stable")
    other = f"{others.iloc[0]['series']} {format_seconds(others.iloc[0]['time_median_s'])}" if len(others) else "–"
    return LengthAnswer(run=run, length=length,
                        fastest=str(fastest["series"]) if fastest is not None else "no exact variant measured",
                        fastest_time=format_seconds(fastest["time_median_s"]) if fastest is not None else "",
                        runner_up=runner_up, least_memory=least,
                        approximations=_frontier(group[group["kind"] == "approximate"], fastest), other=other)


def _frontier(approx: pd.DataFrame, fastest) -> tuple[str, ...]:
    """The approximations worth their error at this length, fastest first, as text."""
    errors = pd.to_numeric(approx["approx_rel_l2_error"], errors="coerce")
    approx = approx[errors.notna()]
    if approx.empty:
        return ()
    limit = float(fastest["time_median_s"]) if fastest is not None else float("inf")
    faster = approx[approx["time_median_s"].astype(float) < limit]
    if faster.empty:
        return (f"none faster than {fastest['series']}",)
    chosen = faster.iloc[pareto_frontier(list(faster["time_median_s"].astype(float)),
                                         list(faster["approx_rel_l2_error"].astype(float)))]
    texts = []
    for r in chosen.itertuples(index=False):
        text = f"{r.series}: {format_seconds(r.time_median_s)}, error {format_error(r.approx_rel_l2_error)}"
        if fastest is not None:
            text += f", {_times(limit / float(r.time_median_s))} faster"
        if finite(r.peak_bytes) is not None:
            text += f", {format_bytes(r.peak_bytes)}"
        texts.append(text)
    return tuple(texts)


def _times(ratio: float) -> str:
    """How many times faster or slower: '4%' below 1.5×, then '1.9×', '15×'."""
    if ratio < 1.5:
        return f"{(ratio - 1) * 100:.0f}%"
    return f"{ratio:.1f}×" if ratio < 10 else f"{ratio:.0f}×"


def _crossover_sentences(rows: list[Crossover], baseline: str | None, axis: str, multi_run: bool) -> list[str]:
    """'Faster than sdpa-flash from seq_len 1024: linear; from 4096: performer.' and the same for memory."""
    if baseline is None or not rows:
        return []
    sentences = []
    for field, what in (("faster_from", "Faster than"), ("smaller_from", "Less memory than")):
        for run in dict.fromkeys(r.run for r in rows):
            prefix = f"{run}: " if multi_run else ""
            by_length: dict[int, list[str]] = {}
            never = []
            for r in rows:
                if r.run != run:
                    continue
                text = getattr(r, field)
                if text.startswith("from "):
                    by_length.setdefault(int(text.rsplit(" ", 1)[1]), []).append(r.series)
                else:
                    never.append(r.series)
            parts = [f"from {axis} {n}: {', '.join(names)}" for n, names in sorted(by_length.items())]
            sentence = f"{prefix}{what} {baseline} " + ("; ".join(parts) if parts else "at no measured length")
            if never and parts:
                sentence += f"; never in the measured range: {', '.join(never)}"
            sentences.append(sentence + ".")
    return sentences

"""Contention, detected per sample: which samples were taken while the process was descheduled,
whether that reaches the cell's median, and re-measuring a cell until it does not.

On a busy machine a CPU cell can come out many times slower than on a quiet
one (mamba2-ssd at seq_len 256: 417 ms against 5.4 ms with a neighbour
spinning), mostly because OpenMP threads spin in a barrier while their
partner waits for a CPU. A load-average warning alone lets that cell into
every plot, slope and crossover; this module keeps it out.

What is recorded (`attnbench.measure.timing.time_cpu`), per sample, around the
same block of calls the sample times and read just outside its perf_counter
window, so the reads never add to the sample:

- ``cpu_share``: the process's CPU seconds over (wall seconds × torch threads).
  Stored with the cell (`Timing.cpu_share`).
- ``run_queue_ns`` (Linux): ns the process's threads ran on a CPU and ns they
  waited on a run queue (the first two fields of /proc/self/task/*/schedstat).

The kernel brings a running thread's clocks up to date only at a tick or a
switch, so a single millisecond sample reads 0 or a whole tick; both signals
are therefore judged per sample over a *window*: the sample and its
neighbours in time order until they last `WINDOW_S` (50 ms).

The rule. A sample is *descheduled* when, across its window, the threads
waited on a run queue for more than ``measure.contention_wait`` (default
10%) of their runnable time (run + wait). This measures being descheduled
directly, and its quiet level is ~0 whatever the variant does: a
legitimately single-threaded variant, or one made of many small ops, may
have a low CPU share on a quiet machine, but its threads do not wait for a
CPU. Measured on this project's 2-core machine (median sample, quiet → two
`while True: pass` neighbours): mamba2-ssd N=256 (batch 1, 8 heads) wait
0.005 → 0.51, CPU share 0.98 → 0.48, 3.5 → 7.7 ms; sdpa-math N=1024 (2
heads) wait 0.003 → 0.49, share 1.04 → 0.49, 5.2 → 34 ms. The share halves
too, but only a quiet reference tells that it dropped; the wait needs none.
Where the run queues cannot be read (not Linux), the windowed CPU share is
judged against the cell's own best samples: a sample is descheduled when
its share is below `SHARE_DROP` × the 90th percentile of the cell's
windowed shares. That fallback sees a neighbour that comes and goes, not
one that was there for every sample. CUDA cells record neither (their
samples are CUDA events) and are never judged contended.

A cell is *contended* when its median sample is descheduled: the sample in
the middle by time, or either of the two middle ones for an even count. A
few descheduled samples in the slow tail do not move the median, so they do
not count against the cell (they show as outliers).

Re-measure: a contended cell is timed again (warm-up included), after a
back-off of ``measure.contention_backoff_s`` that doubles each time (0.5 s,
then 1 s), up to ``measure.contention_retries`` more attempts (default 2).
The last attempt is the one kept (its energy reading matches its calls). If
it is still contended the cell is stored with ``Timing.contended = True``,
``Timing.attempts`` = the attempts made and a warning that names the wait
fraction and CPU share; the tidy frame's ``contended`` column carries it,
and reports draw the cell hollow and leave it out of slopes and crossovers.
``telemetry["contention"]`` keeps every attempt's median, wait and share.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from attnbench.core.settings import MeasureSettings
from attnbench.measure.timing import TimedSamples

SHARE_DROP = 0.6
SHARE_REFERENCE_QUANTILE = 0.9
WINDOW_S = 0.05
WAIT_SIGNAL = "run-queue wait"
SHARE_SIGNAL = "cpu share"
NO_SIGNAL = "none"


def median_indices(samples: Sequence[float]) -> tuple[int, ...]:
    """Indices of the middle sample by value (the two middle ones for an even count); () when empty."""
    if not samples:
        return ()
    order = sorted(range(len(samples)), key=lambda i: samples[i])
    middle = len(order) // 2
    return (order[middle],) if len(order) % 2 else (order[middle - 1], order[middle])


def windows(wall_s: Sequence[float], window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """Per sample, the [start, stop) range of consecutive samples around it that lasts at least `window_s`.

    Grown one sample at a time on the side with less so far, so each sample
    stays near its window's middle; the whole run when it is shorter.
    """
    spans = []
    for i in range(len(wall_s)):
        lo, hi, total = i, i + 1, wall_s[i]
        while total < window_s and (lo > 0 or hi < len(wall_s)):
            if hi < len(wall_s) and (lo == 0 or i - lo >= hi - 1 - i):
                total += wall_s[hi]
                hi += 1
            else:
                lo -= 1
                total += wall_s[lo]
        spans.append((lo, hi))
    return spans


def wait_fractions(wall_s: Sequence[float], run_queue_ns: Sequence[tuple[int, int]],
                   window_s: float = WINDOW_S) -> tuple[float, ...]:
    """Per sample, run-queue wait over (run + wait) of the threads across its window (0.0 with neither)."""
    out = []
    for lo, hi in windows(wall_s, window_s):
        ran = sum(run for run, _ in run_queue_ns[lo:hi])
        waited = sum(wait for _, wait in run_queue_ns[lo:hi])
        out.append(waited / (ran + waited) if ran + waited > 0 else 0.0)
    return tuple(out)


def windowed_shares(wall_s: Sequence[float], cpu_share: Sequence[float],
                    window_s: float = WINDOW_S) -> tuple[float, ...]:
    """Per sample, the CPU share across its window (shares weighted by their samples' wall time)."""
    out = []
    for lo, hi in windows(wall_s, window_s):
        wall = sum(wall_s[lo:hi])
        out.append(sum(w * c for w, c in zip(wall_s[lo:hi], cpu_share[lo:hi], strict=True)) / wall if wall > 0 else 0.0)
    return tuple(out)


def share_reference(cpu_share: Sequence[float]) -> float:
    """The cell's quiet CPU share, from its own best samples: the 90th percentile of the shares."""
    ordered = sorted(cpu_share)
    return ordered[min(len(ordered) - 1, int(SHARE_REFERENCE_QUANTILE * len(ordered)))] if ordered else 0.0


def descheduled_samples(wall_s: Sequence[float], run_queue_ns: Sequence[tuple[int, int]],
                        cpu_share: Sequence[float], wait_limit: float) -> tuple[tuple[bool, ...], str, tuple[float, ...]]:
    """Which samples were taken while descheduled: (flags, the signal used, its windowed value per sample).

    `wall_s` is each sample's wall time (seconds per call × calls per sample).
    """
    if run_queue_ns and len(run_queue_ns) == len(wall_s):
        fractions = wait_fractions(wall_s, run_queue_ns)
        return tuple(w > wait_limit for w in fractions), WAIT_SIGNAL, fractions
    if cpu_share and len(cpu_share) == len(wall_s):
        shares = windowed_shares(wall_s, cpu_share)
        limit = SHARE_DROP * share_reference(shares)
        return tuple(c < limit for c in shares), SHARE_SIGNAL, shares
    return (), NO_SIGNAL, ()


def median_contended(samples_s: Sequence[float], descheduled: Sequence[bool]) -> bool:
    """True when the cell's median sample (either middle one for an even count) was descheduled."""
    if len(descheduled) != len(samples_s):
        return False
    return any(descheduled[i] for i in median_indices(samples_s))


@dataclass(frozen=True)
class Verdict:
    """One attempt judged: its median, what its middle samples waited and got, and whether it is contended."""

    signal: str
    median_s: float
    descheduled: int
    samples: int
    contended: bool
    wait_fraction: float | None
    cpu_share: float | None
    share_reference: float | None

    def to_dict(self) -> dict:
        return {"median_s": self.median_s, "descheduled_samples": self.descheduled, "samples": self.samples,
                "wait_fraction": self.wait_fraction, "cpu_share": self.cpu_share, "contended": self.contended}


def judge(timed: TimedSamples, settings: MeasureSettings) -> Verdict:
    """Apply the rule to one attempt's samples."""
    wall_s = [x * timed.calls_per_sample for x in timed.samples_s]
    flags, signal, values = descheduled_samples(wall_s, timed.run_queue_ns, timed.cpu_share, settings.contention_wait)
    middle = median_indices(timed.samples_s)

    def at_median(series: Sequence[float]) -> float | None:
        if len(series) != len(timed.samples_s) or not middle:
            return None
        return statistics.fmean(series[i] for i in middle)

    shares = windowed_shares(wall_s, timed.cpu_share) if len(timed.cpu_share) == len(wall_s) else ()
    return Verdict(signal=signal, median_s=statistics.median(timed.samples_s) if timed.samples_s else 0.0,
                   descheduled=sum(flags), samples=len(timed.samples_s),
                   contended=median_contended(timed.samples_s, flags),
                   wait_fraction=at_median(values) if signal == WAIT_SIGNAL else None,
                   cpu_share=at_median(shares),
                   share_reference=share_reference(shares) if signal == SHARE_SIGNAL else None)


def backoff_s(retry: int, settings: MeasureSettings) -> float:
    """The wait before re-measure number `retry` (1, 2, ...): the back-off, doubled each time."""
    return settings.contention_backoff_s * 2 ** (retry - 1)


@dataclass(frozen=True)
class Measured:
    """The attempt kept (the last) and the verdict on every attempt, in order."""

    timed: TimedSamples
    verdicts: tuple[Verdict, ...]
    wait_limit: float

    @property
    def attempts(self) -> int:
        return len(self.verdicts)

    @property
    def contended(self) -> bool:
        return self.verdicts[-1].contended

    def warning(self, threads: int | None) -> str | None:
        """The stored warning for a cell that stayed contended, naming what its median sample waited and got."""
        if not self.contended:
            return None
        last = self.verdicts[-1]
        tried = f"in all {self.attempts} attempts" if self.attempts > 1 else "(no re-measure: contention_retries = 0)"
        share = f"CPU share {last.cpu_share:.2f}" if last.cpu_share is not None else "CPU share unknown"
        share += f" of {threads} threads" if threads else ""
        if last.signal == WAIT_SIGNAL:
            what = (f"its threads waited for a CPU {last.wait_fraction:.0%} of their runnable time, "
                    f"limit {self.wait_limit:.0%}, {share}")
        else:
            what = f"its {share} is below {SHARE_DROP:.0%} of the cell's best samples' {last.share_reference:.2f}"
        # No '; ' inside: the tidy frame joins a cell's warnings with it.
        return (f"contended: the median sample was descheduled {tried} ({what}, {last.descheduled} of "
                f"{last.samples} samples descheduled). The time is stored, marked contended and left out "
                "of slopes and crossovers: rerun on a quiet machine")

    def telemetry(self) -> dict:
        """``telemetry["contention"]``: the signal, the limit and each attempt's verdict."""
        last = self.verdicts[-1]
        out = {"signal": last.signal, "contended": self.contended, "attempts": [v.to_dict() for v in self.verdicts]}
        if last.signal == WAIT_SIGNAL:
            out["wait_limit"] = self.wait_limit
        if last.signal == SHARE_SIGNAL:
            out["share_reference"] = last.share_reference
            out["share_drop"] = SHARE_DROP
        return out


def measure_until_quiet(time_once: Callable[[], TimedSamples], settings: MeasureSettings, *,
                        sleep: Callable[[float], None] = time.sleep) -> Measured:
    """Time with `time_once` until the median sample is not descheduled, at most 1 + contention_retries times.

    Sleeps `backoff_s` before each re-measure, so a neighbour that is about
    to finish has the time to.
    """
    verdicts: list[Verdict] = []
    retries = max(0, int(settings.contention_retries))
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_s(attempt, settings))
        timed = time_once()
        verdicts.append(judge(timed, settings))
        if not verdicts[-1].contended:
            break
    return Measured(timed=timed, verdicts=tuple(verdicts), wait_limit=settings.contention_wait)

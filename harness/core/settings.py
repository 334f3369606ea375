"""How cells are measured: the `[measure]` table of a suite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from attnbench.core.records import Record


@dataclass(frozen=True)
class MeasureSettings(Record):
    """Knobs of the measurement, each a key of a suite's ``[measure]`` table.

    warmup_s: time spent calling before timing starts (at least one call).
    budget_s: time the timed repetitions of one cell may take once they
        hold enough samples for a 95% interval of the median (6).
    cap_s: the most the timed repetitions of one cell may take to reach
        those samples; a cell whose samples are too slow for that stops at
        the cap with fewer samples and says "no interval".
    target_rel_ci: stop once the 95% interval of the median is within this
        fraction of it on each side (0.02 = ±2%).
    min_reps, max_reps: bounds on the number of samples.
    min_sample_s: a sample times enough back-to-back calls to last this long,
        so that timer overhead stays negligible for tiny calls (CPU).
    timeout_s: a cell (setup, timing, memory, accuracy) that runs longer is
        killed and stored as 'timeout'.
    accuracy: compare against the float64 reference.
    accuracy_max_pairs: above seq_len·kv_len of this, the reference is
        evaluated on `accuracy_rows` seeded query rows (when the variant's
        function allows it).
    memory: measure peak memory in a separate pass.
    l2_flush: on CUDA, overwrite a buffer twice the L2 size before each
        repetition, outside the timed region.
    cuda_graph: on CUDA, capture the call in a CUDA graph and time replays.
    memory_headroom: fraction of the free memory a cell's predicted peak may use.
    telemetry: sample CPU/GPU telemetry in a background thread and read the
        energy counters around the timed repetitions.
    telemetry_hz: the sampler's rate (low, so its cost stays out of the timing).
    warn_cv: store a warning when the samples' coefficient of variation
        exceeds this (0.10 = 10%).
    processes: repeat the whole measurement of a cell in this many fresh
        worker processes and keep the spread between them (`--processes K`).
    contention_retries: a CPU cell whose median sample was taken while the
        process was descheduled is timed again up to this many more times
        (0 = never) before it is stored with ``contended = true``.
    contention_backoff_s: the wait before the first re-measure; it doubles
        before each further one (0.5 s, then 1 s).
    max_gflops: skip a cell whose forward executes more than this many
        GFLOP (its `performed_flops`, else `flops`; 0 = no limit), stored as
        'skipped' with the figure: a suite can cover model shapes whose
        largest cells only a bigger machine should run.
    contention_wait: a sample is descheduled when its threads spent more
        than this fraction of their runnable time waiting on a run queue
        (Linux; see attnbench.measure.contention for the rule elsewhere).
    """

    warmup_s: float = 0.1
    budget_s: float = 1.0
    cap_s: float = 5.0
    target_rel_ci: float = 0.02
    min_reps: int = 5
    max_reps: int = 10_000
    min_sample_s: float = 0.001
    timeout_s: float = 300.0
    accuracy: bool = True
    accuracy_max_pairs: int = 4096 * 4096
    accuracy_rows: int = 256
    memory: bool = True
    l2_flush: bool = True
    cuda_graph: bool = False
    memory_headroom: float = 0.8
    telemetry: bool = True
    telemetry_hz: float = 20.0
    warn_cv: float = 0.10
    processes: int = 1
    contention_retries: int = 2
    contention_backoff_s: float = 0.5
    contention_wait: float = 0.10
    max_gflops: float = 0.0


def settings_field_types() -> dict[str, type]:
    return {f.name: type(f.default) for f in dataclasses.fields(MeasureSettings)}

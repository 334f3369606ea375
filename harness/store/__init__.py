"""The results store: one folder per run, plain files, loaded as a tidy DataFrame.

- `attnbench.store.runs`: run folders (`RunWriter`, `load_run`, `list_runs`, `resolve_run`);
- `attnbench.store.frame`: the tidy DataFrame (`tidy_frame`, `TIDY_COLUMNS`);
- `attnbench.store.export`: CSV, Parquet, JSON and pytest-benchmark files;
- `attnbench.store.format`: the store format version (`FORMAT_VERSION`) and the
  upgrades that let runs written by older versions load.

Nothing here imports torch or the variants, so a run copied off a GPU cluster
loads on a laptop that has no torch.
"""

from attnbench.store.format import FORMAT_VERSION
from attnbench.store.frame import TIDY_COLUMNS, tidy_frame
from attnbench.store.runs import (
    CELLS_FILE,
    LOCK_FILE,
    RESULTS_ENV,
    RUN_FILE,
    Cell,
    LoadedRun,
    RunWriter,
    default_results_dir,
    list_runs,
    load_run,
    load_runs,
    new_run_id,
    now_iso,
    resolve_run,
)

__all__ = [
    "CELLS_FILE", "FORMAT_VERSION", "LOCK_FILE", "RESULTS_ENV", "RUN_FILE", "TIDY_COLUMNS", "Cell", "LoadedRun",
    "RunWriter", "default_results_dir", "list_runs", "load_run", "load_runs", "new_run_id",
    "now_iso", "resolve_run", "tidy_frame",
]

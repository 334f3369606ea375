"""Terminal output of a run: a live progress bar while it runs (the summary at its end is `summary`)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attnbench.cli.summary import STATUS_STYLE, print_summary
from attnbench.core.markup import safe
from attnbench.core.terminal import make_console, shorten

__all__ = ["SweepProgress", "print_summary"]


class SweepProgress:
    """A rich progress bar fed by the sweep's progress events: the cell in flight and the count done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console(stderr=True)
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
                                             f"{safe(shorten(result.reason, 200))}", highlight=False, soft_wrap=True)
            self._progress.advance(self._task)

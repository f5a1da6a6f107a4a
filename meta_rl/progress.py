"""Training console: a live progress bar with ETA on a terminal, plain lines elsewhere.

:class:`TrainingProgress` is a :class:`~meta_rl.trainer.Trainer` callback. On a terminal it shows
a rich progress bar (iteration, ETA, latest pre/post-adaptation returns) and prints one line per
iteration above it; when stdout is not a terminal (CI, a pipe, a log file) it prints the same
lines as plain text. :func:`summary_table` closes a run with its first/last/best figures.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def iteration_line(record: dict) -> str:
    """One line for one iteration's metrics record."""
    parts = [
        f"iter {record['iteration']:>4}",
        f"pre {record['pre_adapt_return']:9.2f}",
        f"post {record['post_adapt_return']:9.2f}",
        f"gain {record['adaptation_gain']:+8.2f}",
    ]
    for key, label in (("kl", "kl"), ("step_size", "step"), ("grad_norm", "|g|"),
                       ("lr_mean", "lr_mean")):
        if key in record:
            parts.append(f"{label} {record[key]:.3g}")
    parts.append(f"steps {record['env_steps']:,}")
    parts.append(f"{record['wall_s']:.1f}s")
    return "  ".join(parts)


class TrainingProgress:
    """Reports each iteration of a run of ``total`` iterations, starting after ``start``."""

    def __init__(self, total: int, start: int = 0, console: Console | None = None,
                 title: str = "meta-training"):
        self.console = console or Console()
        self.live = self.console.is_terminal
        self.total, self.start = total, start
        self.records: list[dict] = []
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("post {task.fields[post]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._task = self._progress.add_task(escape(title), total=total, completed=start,
                                                 post="-")

    def __enter__(self) -> "TrainingProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        line = iteration_line(record)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
            self._progress.update(self._task, completed=record["iteration"],
                                  post=f"{record['post_adapt_return']:.2f}")
        else:
            print(line, flush=True)


def summary_table(records: list[dict], title: str = "meta-training summary") -> Table:
    """First, last and best iteration of a run's records (this call's iterations)."""
    table = Table(title=title)
    for column in ("", "iteration", "pre-adapt", "post-adapt", "gain", "env steps", "wall s"):
        table.add_column(column, justify="left" if not column else "right")
    if not records:
        return table
    best = max(records, key=lambda r: r["post_adapt_return"])
    for label, r in (("first", records[0]), ("last", records[-1]), ("best post", best)):
        table.add_row(label, str(r["iteration"]), f"{r['pre_adapt_return']:.2f}",
                      f"{r['post_adapt_return']:.2f}", f"{r['adaptation_gain']:+.2f}",
                      f"{r['env_steps']:,}", f"{r['wall_s']:.1f}")
    return table

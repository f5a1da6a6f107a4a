"""Progress of long jobs on the console: a live bar on a terminal, plain lines elsewhere.

Training and each stage of an evaluation report :class:`ProgressEvent`\\ s to a callback. The
callback that :func:`progress_callback` makes by default, :class:`ConsoleProgress`, shows them:

- on a terminal, a rich progress bar per stage: ``done/total``, the elapsed time, the ETA and
  the stage's latest figures (returns, env steps/s);
- elsewhere (a pipe, a log file, CI), the same fields as one plain line per stage every
  ``every`` seconds at most, and the stage's last; lines are written whole, never cut or
  wrapped, whatever the width.

A note (a cache reused, a warning) is an event with ``note`` set; it is printed as one line.
``Trainer(progress=...)`` and ``evaluate(progress=...)`` take ``True`` (this console display),
``False`` (silence) or any callable of one event, for programs that embed them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage`` are finished; ``fields`` are its latest figures,
    formatted. An event with a ``note`` carries a one-line message instead."""

    stage: str
    done: int = 0
    total: int = 0
    unit: str = "iteration"
    fields: dict[str, str] = field(default_factory=dict)
    note: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


def _plural(unit: str) -> str:
    """``batch`` -> ``batches``, ``iteration`` -> ``iterations``."""
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ConsoleProgress:
    """Shows progress events on ``console`` (default: stdout), live on a terminal and as plain
    lines elsewhere (module docstring). Use it as a context manager, or call :meth:`close`."""

    def __init__(self, console: Console | None = None, every: float = 5.0,
                 stream: TextIO | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal and stream is None
        self.stream, self.every = stream, every
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, tuple[float, int]] = {}  # stage -> (start time, done then)
        self._printed: dict[str, float] = {}

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.note:
            self._write(event.note)
            return
        now = time.monotonic()
        if event.stage not in self._started:  # ETA from this call's pace (a resume starts late)
            self._started[event.stage] = (now, event.done)
        text = "  ".join(f"{k} {v}" for k, v in event.fields.items())
        if self.live:
            self._show(event, text)
            return
        last = self._printed.get(event.stage)
        final = event.done >= event.total
        if final or last is None or now - last >= self.every:
            self._printed[event.stage] = now
            self._write(self.line(event, now))

    def line(self, event: ProgressEvent, now: float | None = None) -> str:
        """The plain-text line for ``event``: stage, done/total, elapsed, ETA and fields."""
        now = time.monotonic() if now is None else now
        start, done0 = self._started.get(event.stage, (now, event.done))
        elapsed = now - start
        parts = [f"{event.stage}: {event.done}/{event.total} {_plural(event.unit)}"]
        if event.total:
            parts[0] += f" ({100 * event.done // event.total}%)"
        parts.append(f"{_duration(elapsed)} elapsed")
        if event.done > done0 and event.done < event.total:
            rate = elapsed / (event.done - done0)
            parts.append(f"ETA {_duration(rate * (event.total - event.done))}")
        parts += [f"{k} {v}" for k, v in event.fields.items()]
        return ", ".join(parts)

    def _show(self, event: ProgressEvent, text: str) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[text]}"),
                console=self.console, transient=False)
            self._bar.start()
        if event.stage not in self._tasks:
            self._tasks[event.stage] = self._bar.add_task(
                escape(event.stage), total=event.total, completed=event.done, text="")
        self._bar.update(self._tasks[event.stage], completed=event.done, total=event.total,
                         text=escape(text))

    def _write(self, text: str) -> None:
        if self.live and self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        elif self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def progress_callback(progress: bool | ProgressCallback | None,
                      console: Console | None = None) -> tuple[ProgressCallback, Callable]:
    """``(callback, close)`` for a ``progress`` argument: ``True`` shows the console display,
    ``False``/``None`` nothing, a callable is used as it is."""
    if callable(progress):
        return progress, lambda: None
    if progress:
        display = ConsoleProgress(console)
        return display, display.close
    return (lambda event: None), lambda: None


def summary_table(records: list[dict],
                  title: str = "meta-training: return before and after adapting") -> Table:
    """First, last and best iteration of a run's records (this call's iterations)."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("", "iteration", "before", "after", "env steps", "wall s"):
        table.add_column(column, justify="left" if not column else "right", overflow="fold")
    if not records:
        return table
    best = max(records, key=lambda r: r["post_adapt_return"])
    for label, r in (("first", records[0]), ("last", records[-1]), ("best", best)):
        table.add_row(label, str(r["iteration"]), f"{r['pre_adapt_return']:.2f}",
                      f"{r['post_adapt_return']:.2f}", f"{r['env_steps']:,}",
                      f"{r['wall_s']:.1f}")
    return table


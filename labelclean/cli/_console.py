"""The CLI's stderr console and the Rich progress bars it draws from ``Progress`` calls."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Problems and progress go to stderr; stdout carries results only.
console = Console(stderr=True)


class RichProgress:
    """A context manager whose instances are valid ``labelclean.progress.Progress`` callbacks.

    One bar per task label; a bar disappears when its task completes, so long runs leave
    only the one-line-per-epoch log behind. ``quiet`` (or a non-terminal stderr when
    ``auto_quiet``) turns it into a no-op.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.enabled = not quiet
        self._bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.enabled or not sys.stderr.isatty(),
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._bars.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bars.__exit__(exc_type, exc, tb)

    def __call__(self, task: str, done: int, total: int) -> None:
        """Update (creating if needed) the bar for ``task``."""
        if not self.enabled:
            return
        if task not in self._tasks:
            self._tasks[task] = self._bars.add_task(task, total=total)
        task_id = self._tasks[task]
        self._bars.update(task_id, completed=done, total=total)
        if done >= total:
            self._bars.remove_task(task_id)
            del self._tasks[task]

    def log(self, message: str) -> None:
        """Print one line above the bars (unless quiet)."""
        if self.enabled:
            console.print(message, highlight=False)

"""The progress protocol between library and CLI: the library reports, the CLI draws.

Library code takes ``progress: Progress | None`` and calls ``progress(task, done, total)``;
``task`` is a short label ("decode", "epoch 3/40", ...). Calls are cheap to ignore.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called with the task label, units done so far, and the task's total units."""

    def __call__(self, task: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``task`` finished; must return quickly."""


def report(progress: Progress | None, task: str, done: int, total: int) -> None:
    """Forward to ``progress`` if one was given."""
    if progress is not None:
        progress(task, done, total)

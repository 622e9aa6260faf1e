"""The progress bar over training steps (rich, on stderr), or nothing."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A rich progress bar over steps, or nothing (not a tty, quiet, or ranks > 0)."""

    def __init__(self, enabled: bool, total: int, completed: int, title: str):
        self._bar: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task(title, total=total, completed=completed, stats="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stats(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, stats=text)


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only when stderr is a terminal and not quiet."""
    return not quiet and sys.stderr.isatty()


__all__ = ["Progress", "progress_enabled"]

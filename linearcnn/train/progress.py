"""Training progress on stderr: a rich bar on a terminal, plain lines otherwise (a log file, a
pipe, a notebook's captured stderr), or nothing (quiet, or ranks > 0)."""

from __future__ import annotations

import sys
import time
from typing import Any

#: Plain-line mode prints at most one line per this many seconds (and always the last one).
LINE_SECONDS = 10.0


class Progress:
    """A rich progress bar over steps on a terminal, one plain line per epoch (throttled to
    LINE_SECONDS) when stderr is not one, or nothing when not enabled."""

    def __init__(self, enabled: bool, total: int, completed: int, title: str):
        self._bar: Any = None
        self._lines = enabled and not sys.stderr.isatty()
        self._title, self._total, self._done, self._text = title, total, completed, ""
        self._last_line, self._printed_at = 0.0, -1  # when, and at which step, the last line was printed
        if not enabled or self._lines:
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
        if self._lines and self._text and self._printed_at != self._done:
            self._line()  # the final state, once

    def advance(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance(self._task)

    def stats(self, text: str) -> None:
        self._text = text
        if self._bar is not None:
            self._bar.update(self._task, stats=text)
        elif self._lines and time.monotonic() - self._last_line >= LINE_SECONDS:
            self._line()

    def _line(self) -> None:
        sys.stderr.write(f"{self._title}: step {self._done}/{self._total} {self._text}\n")
        sys.stderr.flush()
        self._last_line, self._printed_at = time.monotonic(), self._done


def progress_enabled(quiet: bool) -> bool:
    """Progress unless quiet: a bar on a terminal, plain lines otherwise (`Progress`)."""
    return not quiet


__all__ = ["Progress", "progress_enabled"]

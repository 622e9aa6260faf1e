"""Command-line interface: `linearcnn derive | data | stats | profile | fit | compare | train | simulate | validate`.

Each command parses its options, calls one package function and formats the result. Bad user
input (`LinearCNNInputError`) becomes one line on stderr and exit code 2, never a traceback; so
does standard output on a full disk (`linearcnn derive > /full/file`).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TextIO

from linearcnn._files import is_write_refusal

# Importing the command modules registers their commands on `app`.
from linearcnn.cli import (  # noqa: F401
    data_commands,
    dynamics_commands,
    measure_commands,
    theory_commands,
    train_commands,
    validate_commands,
)
from linearcnn.cli._app import app
from linearcnn.errors import LinearCNNInputError, option_name


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad input or usage error).

    Called as the console script (argv None) it leaves through `sys.exit`; called from Python with
    an argument list (as the tests do) it returns the code.
    """
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning  # Python warnings as `warning: ...` lines, like ours
    try:
        try:
            app(args=argv, prog_name="linearcnn")
            code = 0
        except SystemExit as exc:  # typer/click finish every run with SystemExit in standalone mode
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                sys.stderr.write(f"{exc.code}\n")
        sys.stdout.flush()  # a full disk under a redirected stdout shows here at the latest
    except LinearCNNInputError as exc:
        message = str(exc) if exc.parameter is None else exc.for_option(option_name(exc.parameter))
        sys.stderr.write(f"error: {message}\n")
        code = 2
    except OSError as exc:
        if not is_write_refusal(exc):
            raise
        where = repr(str(exc.filename)) if exc.filename else "standard output"
        sys.stderr.write(f"error: cannot write {where}: {exc.strerror or exc}; the output is incomplete\n")
        if argv is None:  # the console script: the interpreter flushes stdout once more at exit
            _discard_stdout()
        code = 2
    finally:
        warnings.showwarning = shown
    if argv is None:
        sys.exit(code)
    return code


def _discard_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's last flush of what is
    still buffered does not fail a second time (an 'Exception ignored' report and exit code 120)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture it): nothing to flush later
        pass


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    (file or sys.stderr).write(f"warning: {message}\n")

"""Command-line interface: `linearcnn derive | data | stats | profile | fit | compare | train | simulate | validate`.

Each command parses its options, calls one package function and formats the result. Bad user
input (`LinearCNNInputError`) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from linearcnn.cli._app import app
from linearcnn.errors import LinearCNNInputError

# Importing the command modules registers their commands on `app`.
from linearcnn.cli import (  # noqa: E402,F401
    data_commands,
    measure_commands,
    theory_commands,
    train_commands,
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad input)."""
    try:
        app(args=argv, prog_name="linearcnn", standalone_mode=False)
    except LinearCNNInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return _exit(2, argv)
    except click.exceptions.Exit as exc:
        return _exit(exc.exit_code, argv)
    except click.ClickException as exc:
        exc.show()
        return _exit(exc.exit_code, argv)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        return _exit(1, argv)
    return _exit(0, argv)


def _exit(code: int, argv: list[str] | None) -> int:
    # Called as a console script (argv is None) we leave through sys.exit; called from Python
    # (tests), we return the code.
    if argv is None:
        sys.exit(code)
    return code

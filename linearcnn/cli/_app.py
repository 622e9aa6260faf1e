"""The typer application object and the one place where bad input becomes exit code 2."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="linearcnn",
    help="What does the first layer of a CNN learn, and why? Linear-CNN theory fitted to real networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """What does the first layer of a CNN learn, and why? Linear-CNN theory fitted to real networks."""

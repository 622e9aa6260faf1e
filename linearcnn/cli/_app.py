"""The typer application object and the one place where bad input becomes exit code 2."""

from __future__ import annotations

import typer
import typer.core

_display_type_rich = typer.core.TyperOption.display_type_rich


def _no_metavar_on_flags(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """A flag takes no value, so the help shows no `<bool>` after it (typer 0.29 shows one)."""
    return None if self.is_flag else _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _no_metavar_on_flags  # type: ignore[method-assign,assignment]

app = typer.Typer(
    name="linearcnn",
    help="What does the first layer of a CNN learn, and why? Linear-CNN theory fitted to real networks.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from linearcnn.records import versions

        found = versions()
        typer.echo(f"linearcnn {found.get('linearcnn')} (torch {found.get('torch')}, python {found.get('python')})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the versions of linearcnn, torch and Python, and exit."),
) -> None:
    """What does the first layer of a CNN learn, and why? Linear-CNN theory fitted to real networks."""

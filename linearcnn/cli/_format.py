"""Small helpers shared by the CLI commands: console output, option parsing, and showing library
errors under this command's flags. JSON output is `linearcnn.records.to_json` (strict: NaN -> null).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from linearcnn.errors import LinearCNNInputError
from linearcnn.records import to_json

if TYPE_CHECKING:  # rich loads on first use: `linearcnn --help` stays quick
    from rich.console import Console


def console() -> Console:
    """A rich console on the current stdout (not cached: tests and pipes replace sys.stdout)."""
    from rich.console import Console

    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)


def print_written(*paths: Path | None) -> None:
    """'wrote PATH' for every output file given (None: not asked for)."""
    for path in paths:
        if path is not None:
            console().print(f"wrote {path}")


def echo_warnings(messages: Iterable[object]) -> None:
    """Each distinct warning once on stderr as `warning: ...`, in first-seen order, with a count
    when it repeated (a bootstrap over 200 resamples would otherwise print one warning 200 times)."""
    counts: dict[str, int] = {}
    for message in messages:
        text = str(message)
        counts[text] = counts.get(text, 0) + 1
    for text, count in counts.items():
        typer.echo(f"warning: {text}" + (f" (x{count})" if count > 1 else ""), err=True)


def parse_float_list(text: str, option: str) -> list[float]:
    """Parse '1,0.5,1e-3' into floats; a clear error names the option and the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise LinearCNNInputError(f"{option} expects a comma-separated list of numbers, got {text!r}")
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise LinearCNNInputError(f"{option}: {item!r} is not a number (expected e.g. '1,0.5,1e-3')") from None
    return values


def parse_int_list(text: str, option: str) -> list[int]:
    """Parse '0,10,100' into integers; a clear error names the option."""
    values = parse_float_list(text, option)
    if any(v != int(v) for v in values):
        raise LinearCNNInputError(f"{option} expects integers, got {text!r}")
    return [int(v) for v in values]


def print_json(payload: Any) -> None:
    """`payload` as strict, indented JSON on stdout (`linearcnn.records.to_json`)."""
    sys.stdout.write(to_json(payload))


@contextmanager
def options_named(flags: Mapping[str, str]) -> Iterator[None]:
    """Show a library error about a parameter under this command's flag where it is not the
    parameter's default spelling (`option_name`): `{"kernel_size": "--kernel"}`."""
    try:
        yield
    except LinearCNNInputError as exc:
        if exc.parameter is None or exc.parameter not in flags:
            raise
        raise LinearCNNInputError(exc.for_option(flags[exc.parameter])) from None

"""`linearcnn derive`: the SymPy derivation, as a document or evaluated for given numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from linearcnn._files import atomic_write_text, check_writable_file
from linearcnn.cli._app import app
from linearcnn.cli._format import console, parse_float_list
from linearcnn.errors import LinearCNNInputError
from linearcnn.records import to_json


@app.command()
def derive(
    format: str = typer.Option("text", "--format", "-f", help="text | markdown | latex"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the document to FILE instead of printing it."),
    eigenvalues: Optional[str] = typer.Option(
        None, "--eigenvalues", "-e",
        help="Evaluate the profile instead: comma-separated patch-covariance eigenvalues (variances).",
    ),
    lr: float = typer.Option(0.1, "--lr", help="Learning rate for --eigenvalues (needs lr * max eigenvalue < 2)."),
    steps: str = typer.Option("1,10,100,1000", "--steps", help="Comma-separated step counts for --eigenvalues."),
    tau: Optional[str] = typer.Option(None, "--tau", help="Comma-separated gradient-flow times (instead of --lr/--steps)."),
    init_ratio: float = typer.Option(0.0, "--init-ratio", help="r = sigma/s: evaluate the raw-weights profile."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Divide each profile by its maximum."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
) -> None:
    """Show the derivation of the linear-CNN energy profile, step by step, all computed by SymPy.

    With --eigenvalues, evaluate the derived profile for those eigenvalues at the given steps
    (or gradient-flow times) and print a table or JSON.
    """
    from linearcnn.theory import document

    if format not in document.FORMATS:
        raise LinearCNNInputError(f"--format must be one of text, markdown, latex; got {format!r}")
    if out is not None:
        check_writable_file(out, "--out")
    if eigenvalues is not None:
        text = _evaluate(eigenvalues, lr, steps, tau, init_ratio, normalize, as_json)
    else:
        text = document.render(format)
    if out is None:
        if eigenvalues is not None and not as_json:
            return  # the table was printed by rich
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        console().print(f"wrote {out}")


def _evaluate(eigenvalues: str, lr: float, steps: str, tau: Optional[str], init_ratio: float,
              normalize: bool, as_json: bool) -> str:
    from linearcnn.theory.evaluate import profile_table

    mu = parse_float_list(eigenvalues, "--eigenvalues")
    if tau is not None:
        table = profile_table(mu, tau=parse_float_list(tau, "--tau"), init_ratio=init_ratio, normalize=normalize)
    else:
        table = profile_table(mu, lr=lr, steps=parse_float_list(steps, "--steps"), init_ratio=init_ratio, normalize=normalize)
    payload = table.to_dict()
    if as_json:
        return to_json(payload)
    from rich.table import Table

    shown = Table(title=f"energy profile ({'gradient flow' if tau is not None else f'lr={lr:g}'}"
                  f"{f', r={init_ratio:g}' if init_ratio > 0 else ''}{', max-normalised' if normalize else ''})")
    shown.add_column("eigenvalue", justify="right")
    for p in table.values:
        shown.add_column(f"{table.parameter}={p:g}", justify="right")
    shown.add_column("t -> inf", justify="right")
    for i, m in enumerate(table.eigenvalues):
        shown.add_row(f"{m:.4g}", *(f"{table.profiles[j, i]:.4f}" for j in range(len(table.values))), f"{table.whitening_limit[i]:.4f}")
    console().print(shown)
    return to_json(payload)

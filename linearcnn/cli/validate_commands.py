"""`linearcnn validate`: run the validation suite (the `validation` package installed beside `linearcnn`).

The experiments and their recorded results live in the repository's `validation/`; this command
parses its options and calls `validation.runner.run_validation` (or `regenerate_report`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from linearcnn.cli._app import app
from linearcnn.cli._format import options_named

#: The runner's parameters that this command spells differently.
_FLAGS = {"results_dir": "--results", "figures_dir": "--figures", "report_path": "--report"}


@app.command()
def validate(
    config: str = typer.Option(
        "cpu", "--config", "-c", help="smoke (seconds), cpu (about 15 min on 2 cores) or gpu (one H200, < 10 min)."
    ),
    only: Optional[str] = typer.Option(
        None, "--only",
        help="Comma-separated experiments: linear_cnn, consistency, labels, formula_fit, frozen, trajectories, external.",
    ),
    data: str = typer.Option("builtin", "--data", "-d", help="Data set spec (builtin, cifar10:DIR, ...)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    results: Path = typer.Option(Path("validation/results"), "--results", help="Folder for <experiment>.json."),
    figures: Path = typer.Option(Path("figures"), "--figures", help="Folder for the figures."),
    report: Path = typer.Option(Path("validation/REPORT.md"), "--report", help="The generated report."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where trained networks are cached (default validation/runs/<config>)."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Comma-separated checkpoints for the 'external' experiment."),
    report_only: bool = typer.Option(False, "--report-only", help="Only regenerate the report from the JSON in --results."),
) -> None:
    """Re-measure the paper's claims (Tables 1-3 and more) with seeds; write JSON, figures and REPORT.md."""
    from validation import runner

    with options_named(_FLAGS):
        if report_only:
            runner.regenerate_report(results, report, figures_dir=figures)
            typer.echo(f"wrote {report}")
            return
        names = runner.parse_only(only)
        paths = [p.strip() for p in checkpoints.split(",") if p.strip()] if checkpoints else []
        command = f"linearcnn validate --config {config}"
        if len(sys.argv) > 1 and sys.argv[1] == "validate":  # the command line as typed (console script)
            command = "linearcnn validate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        outputs = runner.run_validation(
            config, only=names, data=data, device=device, results_dir=results, figures_dir=figures, report_path=report,
            run_dir=run_dir, checkpoints=paths, command=command,
        )
    typer.echo(f"wrote {results}/*.json, {figures}/*.png and {report}")
    failed = runner.failed_experiments(outputs)
    if failed:  # the others ran and are written; the failures are recorded with their tracebacks
        typer.echo(f"error: experiment(s) {', '.join(failed)} failed; see their results/*.json for the traceback", err=True)
        raise typer.Exit(1)

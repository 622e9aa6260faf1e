"""`linearcnn validate`: run the validation suite of the repository's `validation/` folder.

The experiments live outside the package (in the repository's `validation/`, beside the results
they produce); this command finds that folder from the current directory or from the package's
location, imports it, and calls `validation.runner.run_validation`.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from linearcnn.cli._app import app
from linearcnn.errors import LinearCNNInputError


def _import_validation():
    """Import `validation.runner` from ./validation or from the checkout holding this package."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "validation" / "runner.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("validation.runner")
    raise LinearCNNInputError(
        f"validation suite not found: no validation/runner.py under {candidates[0]} or {candidates[1]}; "
        "run from the linearcnn repository root"
    )


@app.command()
def validate(
    config: str = typer.Option("cpu", "--config", "-c", help="smoke (seconds), cpu (about 15 min on 2 cores) or gpu (one H200, < 10 min)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated experiments: linear_cnn, consistency, labels, formula_fit, frozen, trajectories, external."),
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
    runner = _import_validation()
    if report_only:
        if not results.is_dir() or not any(results.glob("*.json")):
            raise LinearCNNInputError(f"--results {str(results)!r} holds no <experiment>.json; run `linearcnn validate` first")
        runner.write_report(results, report, figures_dir=figures)
        typer.echo(f"wrote {report}")
        return
    names = runner.parse_only(only)
    paths = [p.strip() for p in checkpoints.split(",") if p.strip()] if checkpoints else []
    command = "linearcnn validate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "validate" else None
    outputs = runner.run_validation(
        config, only=names, data=data, device=device, results_dir=results, figures_dir=figures, report_path=report,
        run_dir=run_dir, checkpoints=paths, command=command or f"linearcnn validate --config {config}",
    )
    typer.echo(f"wrote {results}/*.json, {figures}/*.png and {report}")
    failed = [name for name, record in outputs.items() if isinstance(record.get("results"), dict) and "error" in record["results"]]
    if failed:  # the others ran and are written; the failures are recorded with their tracebacks
        typer.echo(f"error: experiment(s) {', '.join(failed)} failed; see their results/*.json for the traceback", err=True)
        raise typer.Exit(1)

"""`linearcnn validate`: run the validation suite (the `validation` package installed beside `linearcnn`).

The experiments and their recorded results live in the repository's `validation/`; this command
parses its options and calls `validation.runner.run_validation` (or `regenerate_report`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from linearcnn.cli._app import app
from linearcnn.cli._format import options_named

#: The runner's parameters that this command spells differently.
_FLAGS = {"results_dir": "--results", "figures_dir": "--figures", "report_path": "--report"}


@app.command()
def validate(
    config: str = typer.Option(
        "cpu", "--config", help="smoke (seconds; never published), cpu (2 CPU cores) or gpu (one GPU)."
    ),
    only: Optional[str] = typer.Option(
        None, "--only",
        help="Comma-separated experiments: linear_cnn, consistency, labels, formula_fit, binary_pairs, pca_labels, "
        "large_kernel, frozen, trajectories, external (the default: all of these), and init (first-layer initialisers; "
        "only when named).",
    ),
    data: Optional[List[str]] = typer.Option(
        None, "--data", "-d", help="Data set spec (builtin, cifar10:DIR, mnist:DIR, ...); repeat for several (default builtin)."
    ),
    pad: int = typer.Option(
        0, "--pad", help="Pad every image by N px on each side with the channel mean (0 after normalisation); 2: 28 -> 32 px."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    publish: bool = typer.Option(
        False, "--publish",
        help="Write the record: validation/results/, figures/, validation/REPORT.md and the README results block "
        "(default: everything under runs/validate/<config>/).",
    ),
    results: Optional[Path] = typer.Option(None, "--results", help="Folder for <data>/<experiment>.json (overrides the default)."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Folder for the figures (overrides the default)."),
    report: Optional[Path] = typer.Option(None, "--report", help="The generated report (overrides the default)."),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="Where trained networks are cached (default runs/validate/<config>/train)."
    ),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Comma-separated checkpoints for the 'external' experiment."),
    report_only: bool = typer.Option(False, "--report-only", help="Only regenerate the report from the JSON in --results."),
) -> None:
    """Re-measure the paper's claims (Tables 1-3 and more) with seeds; write JSON, figures and REPORT.md."""
    from validation import runner

    with options_named(_FLAGS):
        if report_only:
            paths = runner.output_paths(config, publish=publish, results_dir=results, figures_dir=figures,
                                        report_path=report, run_dir=run_dir)
            runner.regenerate_report(paths.results, paths.report, figures_dir=paths.figures, readme=paths.readme)
            typer.echo(f"wrote {paths.report}" + (f" and the results block of {paths.readme}" if paths.readme else ""))
            return
        names = runner.parse_only(only)
        paths_ = [p.strip() for p in checkpoints.split(",") if p.strip()] if checkpoints else []
        command = f"linearcnn validate --config {config}"
        if len(sys.argv) > 1 and sys.argv[1] == "validate":  # the command line as typed (console script)
            command = "linearcnn validate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        where = runner.output_paths(config, publish=publish, results_dir=results, figures_dir=figures,
                                    report_path=report, run_dir=run_dir)
        outputs = runner.run_validation(
            config, only=names, data=list(data or ["builtin"]), pad=pad, device=device, publish=publish,
            results_dir=results, figures_dir=figures, report_path=report, run_dir=run_dir, checkpoints=paths_,
            command=command,
        )
    typer.echo(f"wrote {where.results}/<data>/*.json, {where.figures}/<data>/*.png and {where.report}"
               + (f"; rewrote the results block of {where.readme}" if where.readme else ""))
    failed = runner.failed_experiments(outputs)
    if failed:  # the others ran and are written; the failures are recorded with their tracebacks
        typer.echo(f"error: experiment(s) {', '.join(failed)} failed; see their results/*.json for the traceback", err=True)
        raise typer.Exit(1)

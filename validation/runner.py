"""Run named experiments, write `results/<experiment>.json` each, then regenerate the report.

    from validation.runner import run_validation
    run_validation("cpu", only=["labels"], data="builtin")

`linearcnn validate` calls `run_validation` (and `regenerate_report` for `--report-only`);
`python -m validation` is the same without the CLI (`main`).
"""

from __future__ import annotations

import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from linearcnn._files import atomic_write_text, check_writable_file
from linearcnn.errors import LinearCNNInputError, option_name
from linearcnn.records import to_json, versions
from validation.configs import get_config
from validation.experiments import EXPERIMENTS
from validation.report import write_report
from validation.runs import Context, device_name

RESULTS_FORMAT = "linearcnn-validation-result"


def parse_only(text: str | None) -> list[str]:
    """'labels,frozen' -> ['labels', 'frozen'] (all experiments for None); one-line error for unknown names."""
    if text is None or text.strip() == "":
        return list(EXPERIMENTS)
    return _check_names([part.strip() for part in text.split(",") if part.strip()])


def _check_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise LinearCNNInputError(f"only {unknown[0]!r} is not an experiment; expected some of {', '.join(EXPERIMENTS)}",
                                  parameter="only")
    return list(names)


@contextmanager
def _about(parameter: str) -> Iterator[None]:
    """Tag an input error raised inside (e.g. by `check_writable_file`) with the parameter it is about."""
    try:
        yield
    except LinearCNNInputError as exc:
        if exc.parameter is not None:
            raise
        raise LinearCNNInputError(str(exc), parameter=parameter) from None


def failed_experiments(outputs: dict[str, Any]) -> list[str]:
    """The experiments of `run_validation`'s outputs that failed (their records hold the traceback)."""
    return [name for name, record in outputs.items() if isinstance(record.get("results"), dict) and "error" in record["results"]]


def regenerate_report(results_dir: str | Path, report_path: str | Path, *, figures_dir: str | Path = "figures") -> Path:
    """Only the report, from the JSON already in `results_dir` (no experiment runs)."""
    results = Path(results_dir)
    if not results.is_dir() or not any(results.glob("*.json")):
        raise LinearCNNInputError(
            f"results_dir {str(results)!r} holds no <experiment>.json; run the validation first", parameter="results_dir"
        )
    return write_report(results, report_path, figures_dir=figures_dir)


def run_validation(
    config: str = "cpu",
    *,
    only: Sequence[str] | None = None,
    data: str = "builtin",
    device: str | None = None,
    results_dir: str | Path = "validation/results",
    figures_dir: str | Path = "figures",
    report_path: str | Path | None = "validation/REPORT.md",
    run_dir: str | Path | None = None,
    checkpoints: Sequence[str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Run the experiments `only` (default: all) of the named configuration `config`; returns {name: result}.

    Checks every output location before any training. `run_dir` (default `validation/runs/<config>`)
    caches the trained networks of this run.
    """
    import dataclasses

    settings = get_config(config)
    if device is not None:
        settings = dataclasses.replace(settings, device=device)
    names = _check_names(only) if only is not None else list(EXPERIMENTS)
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    run_dir = Path(run_dir) if run_dir is not None else Path("validation/runs") / settings.name
    for parameter, folder in (("results_dir", results_dir), ("figures_dir", figures_dir), ("run_dir", run_dir)):
        if folder.exists() and not folder.is_dir():
            raise LinearCNNInputError(f"{parameter} {str(folder)!r} is a file; expected a folder", parameter=parameter)
        folder.mkdir(parents=True, exist_ok=True)
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        with _about("report_path"):
            check_writable_file(report_path, "report_path")
    for path in checkpoints or []:
        if not Path(path).is_file():
            raise LinearCNNInputError(f"checkpoints {str(path)!r} does not exist; expected a checkpoint file",
                                      parameter="checkpoints")

    ctx = Context(settings, data, run_dir, figures_dir, checkpoints=list(checkpoints or []))
    device_text = device_name(ctx.device)
    outputs: dict[str, Any] = {}
    started_all = time.perf_counter()
    for name in names:
        log(f"[validate:{settings.name}] {name} ...")
        started = time.perf_counter()
        try:
            result = EXPERIMENTS[name](ctx)
        except LinearCNNInputError:
            raise  # bad input (e.g. an unreadable --checkpoints file): one line, exit code 2
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            log(f"[validate:{settings.name}] {name} FAILED: {result['error']}")
        seconds = time.perf_counter() - started
        record = {
            "format": RESULTS_FORMAT,
            "experiment": name,
            "config": settings.to_dict(),
            "data": ctx.data_record(),
            "device": device_text,
            "platform": platform.platform(),
            "versions": versions(),
            "seeds": list(settings.seeds),
            "command": command,
            "wall_seconds": seconds,
            "results": result,
        }
        atomic_write_text(results_dir / f"{name}.json", to_json(record, indent=1))
        outputs[name] = record
        log(f"[validate:{settings.name}] {name} done in {seconds:.1f} s")
    log(f"[validate:{settings.name}] all done in {time.perf_counter() - started_all:.1f} s")
    if report_path is not None:
        write_report(results_dir, report_path, figures_dir=figures_dir)
        log(f"[validate:{settings.name}] wrote {report_path}")
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m validation [--config smoke|cpu|gpu] [--only a,b] ...`: `linearcnn validate` without the CLI.

    Exit codes as the CLI's: 0 ok, 1 an experiment failed (the others ran), 2 bad input.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m validation", description="Re-measure the paper's claims; write JSON, figures and REPORT.md."
    )
    parser.add_argument("--config", default="cpu", help="smoke, cpu or gpu")
    parser.add_argument("--only", default=None, help="comma-separated experiments: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", default="validation/results")
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--report", default="validation/REPORT.md")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--checkpoints", default=None, help="comma-separated checkpoints for the 'external' experiment")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    flags = {"results_dir": "--results", "figures_dir": "--figures", "report_path": "--report", "run_dir": "--run-dir"}
    try:
        if args.report_only:
            regenerate_report(args.results, args.report, figures_dir=args.figures)
            print(f"wrote {args.report}")
            return 0
        outputs = run_validation(
            args.config, only=parse_only(args.only), data=args.data, device=args.device, results_dir=args.results,
            figures_dir=args.figures, report_path=args.report, run_dir=args.run_dir,
            checkpoints=[p.strip() for p in (args.checkpoints or "").split(",") if p.strip()],
            command="python -m validation " + " ".join(sys.argv[1:] if argv is None else argv),
        )
    except LinearCNNInputError as exc:
        parameter = exc.parameter
        message = str(exc) if parameter is None else exc.for_option(flags.get(parameter, option_name(parameter)))
        print(f"error: {message}", file=sys.stderr)
        return 2
    failed = failed_experiments(outputs)
    if failed:
        print(f"error: experiment(s) {', '.join(failed)} failed; see their results/*.json for the traceback", file=sys.stderr)
        return 1
    return 0

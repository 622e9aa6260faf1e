"""Run named experiments on each data set, write `results/<data>/<experiment>.json`, then the report.

    from validation.runner import run_validation
    run_validation("cpu", only=["labels"], data=["builtin", "mnist:/data/fashion-mnist"], pad=2)

Outputs go under `runs/validate/<config>/` unless `publish` (see `output_paths`).

`linearcnn validate` calls `run_validation` (and `regenerate_report` for `--report-only`);
`python -m validation` is the same without the CLI (`main`).
"""

from __future__ import annotations

import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linearcnn._files import atomic_write_text, check_writable_file
from linearcnn.errors import LinearCNNInputError, option_name
from linearcnn.records import to_json, versions
from validation.configs import get_config
from validation.experiments import DEFAULT_EXPERIMENTS, EXPERIMENTS
from validation.report import readme_results_block, update_readme, write_report
from validation.runs import Context, data_slug, device_name

RESULTS_FORMAT = "linearcnn-validation-result"


def parse_only(text: str | None) -> list[str]:
    """'labels,frozen' -> ['labels', 'frozen'] (all experiments for None); one-line error for unknown names."""
    if text is None or text.strip() == "":
        return list(DEFAULT_EXPERIMENTS)
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


def failed_experiments(outputs: dict[str, dict[str, Any]]) -> list[str]:
    """'<data>/<experiment>' of `run_validation`'s outputs that failed (their records hold the traceback)."""
    return [f"{slug}/{name}" for slug, records in outputs.items() for name, record in records.items()
            if isinstance(record.get("results"), dict) and "error" in record["results"]]


@dataclass(frozen=True)
class Outputs:
    """Where one validation run writes: results JSON, figures, report, training cache, README block."""

    results: Path
    figures: Path
    report: Path
    run_dir: Path
    readme: Path | None


def output_paths(config: str, *, publish: bool = False, results_dir: str | Path | None = None,
                 figures_dir: str | Path | None = None, report_path: str | Path | None = None,
                 run_dir: str | Path | None = None, readme: str | Path | None = None) -> Outputs:
    """The run's output locations (relative to the working directory, the repository root).

    By default everything goes under `runs/validate/<config>/` (results/, figures/, REPORT.md,
    train/), which git ignores. `publish` writes the record instead: `validation/results/`,
    `figures/`, `validation/REPORT.md` and the README's results block (the training cache stays
    under runs/). Explicit paths override either. The `smoke` configuration never writes the
    record: `publish`, or a path into it, is a one-line input error.
    """
    base = Path("runs/validate") / config
    out = Outputs(
        results=Path(results_dir) if results_dir is not None else Path(PUBLISHED["results"] if publish else base / "results"),
        figures=Path(figures_dir) if figures_dir is not None else Path(PUBLISHED["figures"] if publish else base / "figures"),
        report=Path(report_path) if report_path is not None else Path(PUBLISHED["report"] if publish else base / "REPORT.md"),
        run_dir=Path(run_dir) if run_dir is not None else base / "train",
        readme=Path(readme) if readme is not None else (Path(PUBLISHED["readme"]) if publish else None),
    )
    if config == "smoke":
        if publish:
            raise LinearCNNInputError("config smoke never writes the committed results; drop --publish "
                                      "(smoke results go to runs/validate/smoke/)", parameter="publish")
        record = [Path(p).resolve() for p in PUBLISHED.values()]
        outputs: tuple[tuple[str, Path | None], ...] = (
            ("results_dir", out.results), ("figures_dir", out.figures), ("report_path", out.report), ("readme", out.readme))
        for parameter, path in outputs:
            if path is not None and any(path.resolve() == r or r in path.resolve().parents for r in record):
                raise LinearCNNInputError(f"{parameter} {str(path)!r} is part of the committed results; config smoke "
                                          "never writes there", parameter=parameter)
    return out


#: The committed record (`--publish`), relative to the repository root.
PUBLISHED = {"results": "validation/results", "figures": "figures", "report": "validation/REPORT.md", "readme": "README.md"}


def _has_results(results: Path) -> bool:
    return results.is_dir() and (any(results.glob("*.json")) or any(results.glob("*/*.json")))


def regenerate_report(results_dir: str | Path, report_path: str | Path, *, figures_dir: str | Path = "figures",
                      readme: str | Path | None = None) -> Path:
    """Only the report (and the README block when `readme` is given), from the JSON already in
    `results_dir` (no experiment runs)."""
    results = Path(results_dir)
    if not _has_results(results):
        raise LinearCNNInputError(
            f"results_dir {str(results)!r} holds no <data>/<experiment>.json; run the validation first", parameter="results_dir"
        )
    _check_readme(readme)
    path = write_report(results, report_path, figures_dir=figures_dir)
    if readme is not None:
        update_readme(readme, results)
    return path


def _check_readme(readme: str | Path | None) -> None:
    if readme is None:
        return
    path = Path(readme)
    if not path.is_file() or not readme_results_block(path.read_text()):
        raise LinearCNNInputError(f"readme {str(path)!r} has no generated results block; expected a README.md "
                                  "with the results:start/results:end markers (run from the repository root)", parameter="readme")


def _slugs(data: Sequence[str], pad: int) -> list[tuple[str, str]]:
    """(spec, slug) for each data set, checked before any training; repeated slugs get -2, -3, ..."""
    from linearcnn.data import has_test_split

    out: list[tuple[str, str]] = []
    for spec in data:
        with _about("data"):
            has_test_split(spec)  # parses the spec and checks its path (a one-line error)
            slug = data_slug(spec, pad)
        taken = {s for _, s in out}
        unique, k = slug, 2
        while unique in taken:
            unique, k = f"{slug}-{k}", k + 1
        out.append((spec, unique))
    return out


def run_validation(
    config: str = "cpu",
    *,
    only: Sequence[str] | None = None,
    data: str | Sequence[str] = ("builtin",),
    pad: int = 0,
    device: str | None = None,
    publish: bool = False,
    results_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    report_path: str | Path | None = None,
    run_dir: str | Path | None = None,
    readme: str | Path | None = None,
    checkpoints: Sequence[str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, dict[str, Any]]:
    """Run the experiments `only` (default: `DEFAULT_EXPERIMENTS`, every claim of the paper; `init` only
    when named) of the configuration `config` on each data set of `data`; returns {data slug: {experiment: record}}.

    Output locations: `output_paths`. Each data set gets `results/<slug>/<experiment>.json`,
    `figures/<slug>/`, and its own training cache `run_dir/<slug>/`; the report (and, when
    publishing, the README block) covers every data set in `results`. Every location and data
    spec is checked before any training.
    """
    import dataclasses

    settings = get_config(config)
    if device is not None:
        settings = dataclasses.replace(settings, device=device)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise LinearCNNInputError(f"pad {pad!r}: expected an integer >= 0", parameter="pad")
    names = _check_names(only) if only is not None else list(DEFAULT_EXPERIMENTS)
    paths = output_paths(settings.name, publish=publish, results_dir=results_dir, figures_dir=figures_dir,
                         report_path=report_path, run_dir=run_dir, readme=readme)
    datasets = _slugs([data] if isinstance(data, str) else list(data), pad)
    for parameter, folder in (("results_dir", paths.results), ("figures_dir", paths.figures), ("run_dir", paths.run_dir)):
        if folder.exists() and not folder.is_dir():
            raise LinearCNNInputError(f"{parameter} {str(folder)!r} is a file; expected a folder", parameter=parameter)
        folder.mkdir(parents=True, exist_ok=True)
    paths.report.parent.mkdir(parents=True, exist_ok=True)
    with _about("report_path"):
        check_writable_file(paths.report, "report_path")
    _check_readme(paths.readme)
    for path in checkpoints or []:
        if not Path(path).is_file():
            raise LinearCNNInputError(f"checkpoints {str(path)!r} does not exist; expected a checkpoint file",
                                      parameter="checkpoints")

    outputs: dict[str, dict[str, Any]] = {}
    started_all = time.perf_counter()
    for spec, slug in datasets:
        ctx = Context(settings, spec, paths.run_dir / slug, paths.figures / slug, checkpoints=list(checkpoints or []), pad=pad)
        ctx.slug = slug
        outputs[slug] = _run_one_data_set(ctx, names, settings.name, command, paths.results / slug, log)
    log(f"[validate:{settings.name}] all done in {time.perf_counter() - started_all:.1f} s")
    # Only now, with the new records written: a run that fails part-way leaves the old record whole.
    _drop_superseded(paths.results, {slug for _, slug in datasets}, log)
    write_report(paths.results, paths.report, figures_dir=paths.figures)
    log(f"[validate:{settings.name}] wrote {paths.report}")
    if paths.readme is not None:
        update_readme(paths.readme, paths.results)
        log(f"[validate:{settings.name}] rewrote the results block of {paths.readme}")
    return outputs


def _drop_superseded(results: Path, slugs: set[str], log: Callable[[str], None]) -> None:
    """Remove records of the one-data-set layout (`results/<experiment>.json`) of a data set this
    run measures again: they would stand beside `results/<slug>/` as a second copy."""
    from validation.report import record_slug

    for path in sorted(results.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == RESULTS_FORMAT and record_slug(record) in slugs:
            path.unlink()
            log(f"[validate] removed {path} (superseded by {results / record_slug(record)}/)")


def _run_one_data_set(ctx: Context, names: Sequence[str], config: str, command: str | None, results: Path,
                      log: Callable[[str], None]) -> dict[str, Any]:
    results.mkdir(parents=True, exist_ok=True)
    device_text = device_name(ctx.device)
    outputs: dict[str, Any] = {}
    for name in names:
        log(f"[validate:{config}:{ctx.slug}] {name} ...")
        started = time.perf_counter()
        try:
            result = EXPERIMENTS[name](ctx)
        except LinearCNNInputError:
            raise  # bad input (e.g. an unreadable --checkpoints file): one line, exit code 2
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            log(f"[validate:{config}:{ctx.slug}] {name} FAILED: {result['error']}")
        if "figures" in result:  # figure names relative to the figures folder
            result["figures"] = [f"{ctx.slug}/{f}" for f in result["figures"]]
        seconds = time.perf_counter() - started
        record = {
            "format": RESULTS_FORMAT,
            "experiment": name,
            "config": ctx.config.to_dict(),
            "data": ctx.data_record(),
            "device": device_text,
            "platform": platform.platform(),
            "versions": versions(),
            "seeds": list(ctx.config.seeds),
            "command": command,
            "wall_seconds": seconds,
            "runs": ctx.run_records(),
            "results": result,
        }
        atomic_write_text(results / f"{name}.json", to_json(record, indent=1))
        outputs[name] = record
        log(f"[validate:{config}:{ctx.slug}] {name} done in {seconds:.1f} s")
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m validation [--config smoke|cpu|gpu] [--only a,b] [--data SPEC]... [--pad N] [--publish]`:
    `linearcnn validate` without the CLI.

    Exit codes as the CLI's: 0 ok, 1 an experiment failed (the others ran), 2 bad input.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m validation", description="Re-measure the paper's claims; write JSON, figures and REPORT.md."
    )
    parser.add_argument("--config", default="cpu", help="smoke, cpu or gpu")
    parser.add_argument("--only", default=None, help="comma-separated experiments: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--data", action="append", default=None, help="data set spec; repeat for several (default builtin)")
    parser.add_argument("--pad", type=int, default=0, help="zero-pad the images by N px each side (e.g. 2: 28 -> 32 px)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--publish", action="store_true",
                        help="write validation/results, figures/, validation/REPORT.md and the README block")
    parser.add_argument("--results", default=None)
    parser.add_argument("--figures", default=None)
    parser.add_argument("--report", default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--checkpoints", default=None, help="comma-separated checkpoints for the 'external' experiment")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    flags = {"results_dir": "--results", "figures_dir": "--figures", "report_path": "--report", "run_dir": "--run-dir"}
    try:
        if args.report_only:
            paths = output_paths(args.config, publish=args.publish, results_dir=args.results, figures_dir=args.figures,
                                 report_path=args.report, run_dir=args.run_dir)
            regenerate_report(paths.results, paths.report, figures_dir=paths.figures, readme=paths.readme)
            print(f"wrote {paths.report}")
            return 0
        outputs = run_validation(
            args.config, only=parse_only(args.only), data=args.data or ["builtin"], pad=args.pad, device=args.device,
            publish=args.publish, results_dir=args.results, figures_dir=args.figures, report_path=args.report,
            run_dir=args.run_dir, checkpoints=[p.strip() for p in (args.checkpoints or "").split(",") if p.strip()],
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

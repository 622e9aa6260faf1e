"""Run named experiments, write `results/<experiment>.json` each, then regenerate the report.

    from validation.runner import run_validation
    run_validation("cpu", only=["labels"], data="builtin")
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn._files import atomic_write_text
from linearcnn.errors import LinearCNNInputError
from validation.configs import get_config
from validation.experiments import EXPERIMENTS
from validation.report import write_report
from validation.runs import Context, device_name

RESULTS_FORMAT = "linearcnn-validation-result"


def parse_only(text: str | None) -> list[str]:
    """'labels,frozen' -> ['labels', 'frozen'] (all experiments for None); one-line error for unknown names."""
    if text is None or text.strip() == "":
        return list(EXPERIMENTS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise LinearCNNInputError(f"--only {unknown[0]!r} is not an experiment; expected some of {', '.join(EXPERIMENTS)}")
    return names


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def versions() -> dict[str, str]:
    from linearcnn.train import versions as train_versions

    return train_versions()


def run_validation(
    config_name: str = "cpu",
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
    """Run the experiments `only` (default: all) of configuration `config_name`; returns {name: result}.

    Checks every output location before any training. `run_dir` (default `validation/runs/<config>`)
    caches the trained networks of this run.
    """
    import dataclasses

    config = get_config(config_name)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    names = list(only) if only is not None else list(EXPERIMENTS)
    for name in names:
        if name not in EXPERIMENTS:
            raise LinearCNNInputError(f"experiment {name!r} is not known; expected some of {', '.join(EXPERIMENTS)}")
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    run_dir = Path(run_dir) if run_dir is not None else Path("validation/runs") / config.name
    for what, folder in (("--results", results_dir), ("--figures", figures_dir), ("run folder", run_dir)):
        if folder.exists() and not folder.is_dir():
            raise LinearCNNInputError(f"{what} {str(folder)!r} is a file; expected a folder")
        folder.mkdir(parents=True, exist_ok=True)
    if report_path is not None:
        from linearcnn._files import check_writable_file

        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        check_writable_file(report_path, "--report")
    for path in checkpoints or []:
        if not Path(path).is_file():
            raise LinearCNNInputError(f"--checkpoints {str(path)!r} does not exist; expected a checkpoint file")

    ctx = Context(config, data, run_dir, figures_dir, checkpoints=list(checkpoints or []))
    device_text = device_name(ctx.device)
    outputs: dict[str, Any] = {}
    started_all = time.perf_counter()
    for name in names:
        log(f"[validate:{config.name}] {name} ...")
        started = time.perf_counter()
        try:
            result = EXPERIMENTS[name](ctx)
        except LinearCNNInputError:
            raise  # bad input (e.g. an unreadable --checkpoints file): one line, exit code 2
        except Exception as exc:  # noqa: BLE001  a failed experiment is recorded; the others still run
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            log(f"[validate:{config.name}] {name} FAILED: {result['error']}")
        seconds = time.perf_counter() - started
        record = {
            "format": RESULTS_FORMAT,
            "experiment": name,
            "config": config.to_dict(),
            "data": ctx.data_record(),
            "device": device_text,
            "platform": platform.platform(),
            "versions": versions(),
            "seeds": list(config.seeds),
            "command": command,
            "wall_seconds": seconds,
            "results": result,
        }
        atomic_write_text(results_dir / f"{name}.json", json.dumps(_jsonable(record), indent=1) + "\n")
        outputs[name] = record
        log(f"[validate:{config.name}] {name} done in {seconds:.1f} s")
    log(f"[validate:{config.name}] all done in {time.perf_counter() - started_all:.1f} s")
    if report_path is not None:
        write_report(results_dir, report_path, figures_dir=figures_dir)
        log(f"[validate:{config.name}] wrote {report_path}")
    return outputs

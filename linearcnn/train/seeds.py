"""Several seeds of one configuration: one after another, or together as one vmapped stack.

    results = train_seeds(config, [0, 1, 2])                  # DIR/seed0, DIR/seed1, ... one after another
    results = train_seeds(config, [0, 1, 2], together=True)   # the same models, trained as one vmapped stack

With several seeds and `config.out`, seed S writes to out/seed{S}/ and out/metrics.json summarises
the runs (per seed: final loss, accuracy and first-layer displacement, converged, reached_step and
reached_epoch; mean and std over seeds; `converged`: every seed did). With a stopping target
(`until_train_acc`, `until_loss`), seeds trained one after another each stop on their own; a
`together` stack stops when every seed has reached it (each records where it first did). When `together` pays:
`python benchmarks/bench_seeds.py` measures both ways on one device (on a 2-core CPU 3 VGG11-bn
models of width 16 train at 0.70x the speed of one after another: batched convolutions are slower
there).

>>> parse_seeds("0,1,2")
[0, 1, 2]
>>> seed_out_dir("runs/x", 3).as_posix()
'runs/x/seed3'
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from linearcnn._files import atomic_write_text
from linearcnn.device import resolve_device
from linearcnn.errors import LinearCNNInputError
from linearcnn.records import versions
from linearcnn.train.config import MAX_SEED, TrainConfig, check_together
from linearcnn.train.device_data import load_test_dataset, load_training_dataset
from linearcnn.train.distributed import distributed, is_main_process
from linearcnn.train.loop import TrainResult, train, train_together
from linearcnn.train.metrics import METRICS_NAME, final_metrics
from linearcnn.train.run_files import check_out_dir

if TYPE_CHECKING:
    from linearcnn.data import ImageDataset


def seed_out_dir(out: str | os.PathLike[str], seed: int) -> Path:
    """Where seed `seed` of a several-seed run writes: out/seed{seed}."""
    return Path(out) / f"seed{seed}"


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; LinearCNNInputError for anything else."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise LinearCNNInputError(
            f"seeds {text!r} is not valid; expected comma-separated integers such as 0,1,2", parameter="seeds"
        ) from None
    if not seeds or any(s < 0 or s > MAX_SEED for s in seeds):
        raise LinearCNNInputError(
            f"seeds {text!r} is not valid; expected comma-separated integers in [0, 2**63 - 1] such as 0,1,2", parameter="seeds"
        )
    return seeds


def train_seeds(
    config: TrainConfig, seeds: Sequence[int], *, together: bool = False, dataset: ImageDataset | None = None,
    test_dataset: ImageDataset | None = None, progress: bool = False,
) -> list[TrainResult]:
    """Train one independent model per seed (same data, loaded once): one after another, or
    `together` as one vmapped stack (`linearcnn.train.stepper.StackedStepper`); see the module docstring.

    Every seed's inputs and output folder are checked before the first trains.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LinearCNNInputError("seeds is empty; expected a comma-separated list such as 0,1,2", parameter="seeds")
    if len(set(seeds)) != len(seeds):
        raise LinearCNNInputError(f"seeds {','.join(map(str, seeds))} repeats a seed; expected distinct seeds", parameter="seeds")
    if len(seeds) == 1:  # together or not: one model
        return [train(dataclasses.replace(config, seed=seeds[0]), dataset=dataset, test_dataset=test_dataset, progress=progress)]
    configs = [
        dataclasses.replace(config, seed=s, out=None if config.out is None else str(seed_out_dir(config.out, s))) for s in seeds
    ]
    if together:
        check_together([c.validate() for c in configs])
    for one in configs:
        check_out_dir(one.validate(), is_main_process())
    config.validate()
    if dataset is None:
        dataset = load_training_dataset(config.resolved())
        if test_dataset is None:
            test_dataset = load_test_dataset(config.resolved())
    with distributed(resolve_device(config.device)) as (dist, _):  # one process group for all seeds
        if together:
            results = train_together(configs, dataset=dataset, test_dataset=test_dataset, progress=progress)
        else:
            results = [train(one, dataset=dataset, test_dataset=test_dataset, progress=progress) for one in configs]
    if config.out is not None and dist.is_main:
        _write_summary(config, seeds, results)
    return results


def _write_summary(config: TrainConfig, seeds: list[int], results: list[TrainResult]) -> None:
    """out/metrics.json of a several-seed run: each seed's final metrics (first_layer_displacement
    included), whether it converged and where it reached its target; mean and std over seeds."""
    finals = [final_metrics(r) for r in results]
    losses, accuracies = [f["loss"] for f in finals], [f["accuracy"] for f in finals]
    displacements = [f["first_layer_displacement"] for f in finals]
    runs = [
        {"seed": s, "out": f"seed{s}", **f, "converged": r.converged, "reached_step": r.stop.get("reached_step"),
         "reached_epoch": r.stop.get("reached_epoch")}
        for s, f, r in zip(seeds, finals, results)
    ]
    summary = {
        "config": config.validate().resolved().to_dict(), "seeds": seeds, "versions": versions(), "runs": runs,
        "stop_rule": results[0].stop.get("rule"), "converged": all(r.converged for r in results),
        "loss_mean": float(np.mean(losses)), "loss_std": float(np.std(losses)),
        "accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
        "first_layer_displacement_mean": float(np.mean(displacements)), "first_layer_displacement_std": float(np.std(displacements)),
    }
    atomic_write_text(Path(str(config.out)) / METRICS_NAME, json.dumps(summary, indent=2) + "\n")


__all__ = ["parse_seeds", "seed_out_dir", "train_seeds"]

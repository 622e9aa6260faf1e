"""`Context`: everything the experiments of one validation run on one data set share.

The data (training and test splits, zero-padded by `pad` pixels when asked), the patch statistics
of exactly those training images, and the trained networks. A network is named by an `Arm`
(arch, width, labels, lr, momentum, frozen first layer) and a seed; `Context.trained` trains it
once per run — until its training target or the epoch cap (`ValidationConfig`) — writes its
checkpoint under `run_dir/<arm>/seed<k>/`, and hands the same result to every experiment that
asks again (a later run with the same run folder resumes from the finished checkpoints). Every
run an experiment used is listed in its results (`Context.run_records`), converged or not.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from validation.configs import ValidationConfig


@dataclass(frozen=True)
class Arm:
    """One kind of trained network; with a seed it names one training run."""

    arch: str = "vgg11"
    width: int = 16
    labels: str = "true"
    lr: float = 0.01
    frozen: bool = False
    momentum: float = 0.0
    task: str = ""          # a derived task of `validation.task_data` ("pair-3-5", "pca-1"); "" the data set itself
    kernel_size: int | None = None  # the first layer's kernel (None: the configuration's)
    init: str = "default"   # the first layer's initialiser (`linearcnn.first_layer_init`)
    epochs: int | None = None  # a fixed number of epochs, no training target (None: trained to its target)

    @property
    def key(self) -> str:
        """Folder name, e.g. 'vgg11-w32-true-lr0.01' (+ '-m0.9' with momentum, + '-frozen', + '-pair-3-5' for a task,
        + '-e40-init-whitening' for a fixed-epoch run from an initialiser)."""
        return (f"{self.arch}-w{self.width}-{self.labels}-lr{self.lr:g}" + (f"-m{self.momentum:g}" if self.momentum else "")
                + ("-frozen" if self.frozen else "") + (f"-{self.task}" if self.task else "")
                + (f"-e{self.epochs}" if self.epochs else "") + (f"-init-{self.init}" if self.init != "default" or self.epochs else ""))

    def describe(self) -> dict[str, Any]:
        """The arm's settings, for the per-arm table (optimiser spelled out)."""
        optimiser = "SGD" + (f", momentum {self.momentum:g}" if self.momentum else " (plain)")
        return {"arch": self.arch, "width": self.width, "labels": self.labels, "lr": self.lr, "optimiser": optimiser,
                "frozen": self.frozen, "task": self.task, "kernel_size": self.kernel_size, "init": self.init, "fixed_epochs": self.epochs}


@dataclass
class Trained:
    """What the experiments read from one trained network."""

    arm: Arm
    seed: int
    initial: np.ndarray            # (K, C, k, k) float64, first layer at step 0
    final: np.ndarray              # (K, C, k, k) float64, first layer at the end
    snapshot_steps: np.ndarray     # (S,) int64
    snapshots: np.ndarray          # (S, K, C, k, k) float64
    metrics: dict[str, Any]        # per-epoch loss/accuracy lists and per-step losses (train.py)
    train_accuracy: float          # mean over the last epoch
    train_loss: float
    test_accuracy: float
    checkpoint: str | None
    steps: int = 0                 # optimizer steps done
    epochs: int = 0                # epochs done
    target: float = 0.0            # the train accuracy this run had to reach
    converged: bool = True         # reached `target` before the epoch cap
    stop: dict[str, Any] = dataclasses.field(default_factory=dict)  # the training's stop record, when it has one

    @property
    def displacement(self) -> float:
        """||W - W0|| / ||W0|| of the first layer at the end."""
        return float(np.linalg.norm(self.final - self.initial) / np.linalg.norm(self.initial))

    def record(self) -> dict[str, Any]:
        """One row of the per-arm table (JSON)."""
        return {"arm": self.arm.key, **self.arm.describe(), "seed": self.seed, "steps": self.steps, "epochs": self.epochs,
                "train_accuracy": self.train_accuracy, "test_accuracy": self.test_accuracy,
                "displacement": self.displacement, "target": self.target, "converged": self.converged, "stop": self.stop,
                "train_seconds": float(sum(self.metrics.get("seconds", [])))}  # the training epochs, when it was trained


def data_slug(spec: str, pad: int = 0) -> str:
    """A readable folder name for a data spec: 'builtin', 'fashion-mnist' (from mnist:/data/fashion-mnist),
    'one-split' (from npz:/x/one_split.npz); '-pad2' appended when the images are padded."""
    from linearcnn.data import parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.path is None:
        name = parsed.kind if parsed.size is None else f"{parsed.kind}-{parsed.size}"
    else:
        path = parsed.path.expanduser()
        name = path.stem if path.suffix.lower() == ".npz" else path.name
        name = name or parsed.kind
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or parsed.kind
    return slug + (f"-pad{pad}" if pad else "")


#: The paper's data sets, by their slug without punctuation (a run on one of them is compared with its own numbers).
PAPER_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "celeba": "CelebA", "imagenet": "ImageNet"}


def paper_dataset(spec: str) -> str | None:
    """The paper's name of the data set `spec` reads ('CIFAR-10' for cifar10:DIR), or None."""
    from linearcnn.data import parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.kind in PAPER_DATASETS:
        return PAPER_DATASETS[parsed.kind]
    return PAPER_DATASETS.get(re.sub(r"[^a-z0-9]", "", data_slug(spec)))


def device_name(device: torch.device) -> str:
    """A readable name of the device results were computed on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Context:
    """Data, patch statistics and trained networks of one validation run (built lazily)."""

    def __init__(self, config: ValidationConfig, data: str, run_dir: Path, figures_dir: Path,
                 checkpoints: list[str] | None = None, progress: bool = False, pad: int = 0):
        from linearcnn.device import resolve_device

        self.config = config
        self.data = data
        self.pad = int(pad)
        self.slug = data_slug(data, self.pad)
        self.used: dict[tuple[Arm, int], Trained] = {}  # the runs the current experiment asked for
        self.run_dir = Path(run_dir)
        self.figures_dir = Path(figures_dir)
        self.checkpoints = list(checkpoints or [])
        self.progress = progress
        self.device = resolve_device(config.device)
        self._trained: dict[tuple[Arm, int], Trained] = {}
        self._tasks: dict[str, tuple[Any, Any, Any, dict[str, Any]]] = {}

    # -- data ---------------------------------------------------------------------------------

    @cached_property
    def train_set(self) -> Any:

        return self.load(self.config.train_limit)

    def load(self, limit: int | None) -> Any:
        """The first `limit` training images, padded by `pad` (the border is 0 after normalisation)."""
        from linearcnn.data import load_dataset

        return load_dataset(self.data, limit=limit, min_size=self.config.kernel_size).padded(self.pad)

    @cached_property
    def test_set(self) -> Any:
        """The data's test split (padded as the training images, with the training mean), or None
        when it has none (test accuracies are then not measured)."""
        from linearcnn.data import has_test_split, load_dataset

        if not has_test_split(self.data):
            return None
        test = load_dataset(self.data, limit=self.config.test_limit, train=False, min_size=self.config.kernel_size)
        return test.padded(self.pad, fill=self.train_set.channel_stats()[0])

    @cached_property
    def stats(self) -> Any:
        """Patch statistics (uncentred second moment, as the paper) of the normalised training images:
        exactly the (padded) images the networks train on."""
        from linearcnn.patches import dataset_patch_stats

        return dataset_patch_stats(self.train_set, self.config.kernel_size, device=self.device)

    def task(self, task: str) -> tuple[Any, Any, Any, dict[str, Any]]:
        """(train set, test set or None, patch statistics of the train set, info) of a derived task
        (`validation.task_data`), built once per run. A class pair takes the first `train_limit`
        images of its two classes from the whole training split; PCA-component labels relabel the
        run's training images."""
        if task not in self._tasks:
            from linearcnn.data import load_dataset
            from linearcnn.patches import dataset_patch_stats
            from validation.task_data import class_pair, parse_task, pca_component_labels

            kind, args = parse_task(task)
            c = self.config
            test: Any
            if kind == "crop":
                spec = f"builtin:{c.train_limit or 10_000}@{args[0]}"
                train = load_dataset(spec, min_size=args[1])
                test = load_dataset(f"builtin:{c.test_limit or 2_000}@{args[0]}", train=False, min_size=args[1])
                stats = dataset_patch_stats(train, args[1], device=self.device)
                info = {"spec": spec, "crop": args[0], "kernel_size": args[1], "train_images": len(train),
                        "test_images": len(test)}
            elif kind == "pair":
                whole = self.train_set if c.train_limit is None else self.load(None)
                a, b = args
                train = class_pair(whole, a, b, limit=c.train_limit)
                test = None if self.test_set is None else class_pair(self.test_set, a, b, limit=c.test_limit)
                stats = dataset_patch_stats(train, c.kernel_size, device=self.device)
                info = {"classes": train.classes, "train_images": len(train), "test_images": 0 if test is None else len(test)}
            else:
                train, test, info = pca_component_labels(self.train_set, self.test_set, self.stats, args[0])
                stats = self.stats
            self._tasks[task] = (train, test, stats, info)
        return self._tasks[task]

    def stats_for(self, arm: Arm) -> Any:
        """The patch statistics of the images `arm` trains on (the data set's, or its task's)."""
        return self.task(arm.task)[2] if arm.task else self.stats

    def figure(self, name: str) -> Path:
        """Where the figure `name` goes (the figures folder is made on first use)."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        return self.figures_dir / name

    def data_record(self) -> dict[str, Any]:
        return {
            "spec": self.data,
            "slug": self.slug,
            "pad": self.pad,
            "paper_dataset": paper_dataset(self.data),
            "description": str(getattr(self.train_set, "description", "")),
            "train_images": len(self.train_set.images),
            "test_images": 0 if self.test_set is None else len(self.test_set.images),
            "image_shape": list(self.train_set.images.shape[1:]),
            "kernel_size": self.config.kernel_size,
        }

    # -- networks -----------------------------------------------------------------------------

    def arm(self, arch: str = "vgg11", *, width: int | None = None, labels: str = "true", lr_factor: float = 1.0,
            frozen: bool = False, momentum: float | None = None, task: str = "", kernel_size: int | None = None,
            init: str = "default", epochs: int | None = None) -> Arm:
        """The arm of `arch` at the configured width, lr (times `lr_factor`) and momentum.

        "vgg11" names the VGG family in the results; the network trained is `config.vgg_arch`
        (VGG11 with batch norm by default: under the paper's plain SGD at lr 0.01, VGG11 without
        batch norm stays at chance on the built-in set, see `ValidationConfig.vgg_arch`).
        """
        c = self.config
        if arch == "vgg11":
            arch = c.vgg_arch
        if width is None:
            width = c.resnet_width if arch.startswith("resnet") else c.vgg_width
        return Arm(arch=arch, width=width, labels=labels, lr=c.lr * lr_factor, frozen=frozen,
                   momentum=c.momentum if momentum is None else momentum, task=task, kernel_size=kernel_size, init=init, epochs=epochs)

    def trained(self, arm: Arm, seed: int) -> Trained:
        """Train (or resume from this run folder) `arm` with `seed`, once per run."""
        key = (arm, int(seed))
        if key not in self._trained:
            self._trained[key] = self._train(arm, int(seed))
        self.used[key] = self._trained[key]
        return self._trained[key]

    def run_records(self) -> list[dict[str, Any]]:
        """The per-arm table's rows of every run used since the last call (then forgotten)."""
        rows = [run.record() for run in self.used.values()]
        self.used = {}
        return rows

    def trained_all(self, arm: Arm) -> list[Trained]:
        return [self.trained(arm, s) for s in self.config.seeds]

    def _train(self, arm: Arm, seed: int) -> Trained:
        from linearcnn.train import TrainConfig, final_metrics, train

        c = self.config
        train_set, test_set = (self.task(arm.task)[:2]) if arm.task else (self.train_set, self.test_set)
        n = len(train_set.images)
        steps_per_epoch = -(-n // min(c.batch_size, n))
        out = self.run_dir / arm.key / f"seed{seed}"
        target = c.target_acc(arm.labels) if arm.epochs is None else 0.0
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        # the stopping rule (train accuracy >= target, or max_epochs); without it the cap alone; a fixed-epoch arm: its epochs
        rule: dict[str, Any] = ({"until_train_acc": target, "max_epochs": c.max_epochs} if "until_train_acc" in known and arm.epochs is None
                                else {})
        if arm.init != "default" or arm.epochs is not None:  # the initialiser experiment: test accuracy along training
            rule.update(first_layer_init=arm.init, test_every=c.init_test_every)
        config = TrainConfig(
            arch=arm.arch, data=self.data, labels=arm.labels, epochs=arm.epochs or c.max_epochs, lr=arm.lr, batch_size=c.batch_size,
            momentum=arm.momentum, seed=seed, width=arm.width, kernel_size=arm.kernel_size or c.kernel_size,
            freeze_first_layer=arm.frozen, limit=c.train_limit,
            snapshot_every=max(1, steps_per_epoch // max(1, c.snapshots_per_epoch)),
            device=c.device, out=str(out), resume=True, checkpoint_seconds=1e9, **{"test_every": 0, **rule},
        )
        result = train(config, dataset=train_set, test_dataset=test_set, progress=self.progress)
        last = final_metrics(result)
        reported = _stop_record(result, out)
        steps = result.snapshot_steps.numpy().astype(np.int64)
        snapshots = result.snapshot_weights.to(torch.float64).numpy()
        final = _first_layer_weights(result)
        if steps.size == 0 or steps[-1] != result.step:  # make the last snapshot the final weights
            steps = np.append(steps, result.step)
            snapshots = np.concatenate([snapshots, final[None]], axis=0)
        return Trained(
            arm=arm, seed=seed, initial=result.initial_first_layer.to(torch.float64).numpy(), final=final,
            snapshot_steps=steps, snapshots=snapshots, metrics=result.metrics,
            train_accuracy=float(last["accuracy"]), train_loss=float(last["loss"]),
            test_accuracy=float(last.get("test_accuracy", float("nan"))),
            checkpoint=None if result.checkpoint_path is None else str(result.checkpoint_path),
            steps=int(result.step), epochs=int(result.epoch), target=target, stop=reported.get("stop") or {},
            # the training's own verdict where it gives one; else the rule applied to the last epoch's accuracy
            converged=bool(reported["converged"]) if reported.get("converged") is not None
            else float(last["accuracy"]) >= target,
        )


def _stop_record(result: Any, out: Path) -> dict[str, Any]:
    """{"converged", "stop"} as the training reports them (TrainResult, else its metrics.json), or {}."""
    if getattr(result, "converged", None) is not None:
        return {"converged": result.converged, "stop": getattr(result, "stop", None)}
    path = out / "metrics.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        if summary.get("converged") is not None:
            return {"converged": summary["converged"], "stop": summary.get("stop")}
    return {}


def _first_layer_weights(result: Any) -> np.ndarray:
    from linearcnn.models import first_layer

    return first_layer(result.model).weight.detach().to(device="cpu", dtype=torch.float64).numpy()  # (K, C, k, k)


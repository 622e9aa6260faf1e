"""`Context`: everything the experiments of one validation run share.

The data (training and test splits), the patch statistics, and the trained networks. A network
is named by an `Arm` (arch, width, labels, lr, frozen first layer) and a seed; `Context.trained`
trains it once per run, writes its checkpoint under `run_dir/<arm>/seed<k>/`, and hands the same
result to every experiment that asks again (a later run with the same run folder resumes from the
finished checkpoints instead of training again).
"""

from __future__ import annotations

import platform
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

    @property
    def key(self) -> str:
        """Folder name, e.g. 'vgg11-w16-true-lr0.01' (+ '-frozen')."""
        return f"{self.arch}-w{self.width}-{self.labels}-lr{self.lr:g}" + ("-frozen" if self.frozen else "")


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


def device_name(device: torch.device) -> str:
    """A readable name of the device results were computed on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Context:
    """Data, patch statistics and trained networks of one validation run (built lazily)."""

    def __init__(self, config: ValidationConfig, data: str, run_dir: Path, figures_dir: Path,
                 checkpoints: list[str] | None = None, progress: bool = False):
        from linearcnn.device import resolve_device

        self.config = config
        self.data = data
        self.run_dir = Path(run_dir)
        self.figures_dir = Path(figures_dir)
        self.checkpoints = list(checkpoints or [])
        self.progress = progress
        self.device = resolve_device(config.device)
        self._trained: dict[tuple[Arm, int], Trained] = {}

    # -- data ---------------------------------------------------------------------------------

    @cached_property
    def train_set(self) -> Any:
        from linearcnn.data import load_dataset

        return load_dataset(self.data, limit=self.config.train_limit, min_size=self.config.kernel_size)

    @cached_property
    def test_set(self) -> Any:
        """The data's test split, or None when it has none (test accuracies are then not measured)."""
        from linearcnn.data import has_test_split, load_dataset

        if not has_test_split(self.data):
            return None
        return load_dataset(self.data, limit=self.config.test_limit, train=False, min_size=self.config.kernel_size)

    @cached_property
    def stats(self) -> Any:
        """Patch statistics (uncentred second moment, as the paper) of the normalised training images."""
        from linearcnn.patches import dataset_patch_stats

        return dataset_patch_stats(self.train_set, self.config.kernel_size, device=self.device)

    def figure(self, name: str) -> Path:
        """Where the figure `name` goes (the figures folder is made on first use)."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        return self.figures_dir / name

    def data_record(self) -> dict[str, Any]:
        return {
            "spec": self.data,
            "description": str(getattr(self.train_set, "description", "")),
            "train_images": len(self.train_set.images),
            "test_images": 0 if self.test_set is None else len(self.test_set.images),
            "image_shape": list(self.train_set.images.shape[1:]),
            "kernel_size": self.config.kernel_size,
        }

    # -- networks -----------------------------------------------------------------------------

    def arm(self, arch: str = "vgg11", *, width: int | None = None, labels: str = "true", lr_factor: float = 1.0,
            frozen: bool = False) -> Arm:
        """The arm of `arch` at the configured width and lr (times `lr_factor`)."""
        c = self.config
        if width is None:
            width = c.resnet_width if arch.startswith("resnet") else c.vgg_width
        return Arm(arch=arch, width=width, labels=labels, lr=c.lr * lr_factor, frozen=frozen)

    def trained(self, arm: Arm, seed: int) -> Trained:
        """Train (or resume from this run folder) `arm` with `seed`, once per run."""
        key = (arm, int(seed))
        if key not in self._trained:
            self._trained[key] = self._train(arm, int(seed))
        return self._trained[key]

    def trained_all(self, arm: Arm) -> list[Trained]:
        return [self.trained(arm, s) for s in self.config.seeds]

    def _train(self, arm: Arm, seed: int) -> Trained:
        from linearcnn.train import TrainConfig, final_metrics, train

        c = self.config
        n = len(self.train_set.images)
        steps_per_epoch = -(-n // min(c.batch_size, n))
        total_steps = steps_per_epoch * c.epochs
        out = self.run_dir / arm.key / f"seed{seed}"
        config = TrainConfig(
            arch=arm.arch, data=self.data, labels=arm.labels, epochs=c.epochs, lr=arm.lr, batch_size=c.batch_size,
            momentum=c.momentum, seed=seed, width=arm.width, kernel_size=c.kernel_size,
            freeze_first_layer=arm.frozen, limit=c.train_limit,
            snapshot_every=max(1, total_steps // max(1, c.snapshots_per_run)),
            device=c.device, out=str(out), resume=True, checkpoint_seconds=1e9, test_every=0,
        )
        result = train(config, dataset=self.train_set, test_dataset=self.test_set, progress=self.progress)
        last = final_metrics(result)
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
        )


def _first_layer_weights(result: Any) -> np.ndarray:
    from linearcnn.models import first_layer

    return first_layer(result.model).weight.detach().to(device="cpu", dtype=torch.float64).numpy()  # (K, C, k, k)


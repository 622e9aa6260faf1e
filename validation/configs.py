"""Named sizes of the validation suite. The code path is the same for all; only the sizes differ.

* `smoke` — tiny (a few seconds on a CPU): every experiment's code path, for the test suite.
  Its numbers mean nothing.
* `cpu`   — what two CPU cores afford: the whole suite in under 20 minutes. Scaled down
  (2,000 training images, VGG11 widths 16/32, ResNet20 width 16, 12 epochs; the linear CNN on
  500 images, 30 float64 full-batch steps trained — float64 convolutions are slow on a CPU — and
  the closed form far beyond).
* `gpu`   — the full-size run for one H200 within 10 minutes: all 10,000 built-in training images,
  the standard widths, 30 epochs.

Training follows PAPER.md section 4 (plain SGD at lr 0.01, no augmentation, per-channel
normalisation) except that momentum 0.9 is used: without it, VGG11 (no batch norm) hardly leaves
its initialisation in the few hundred steps a CPU affords. The report states this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from linearcnn.errors import LinearCNNInputError


@dataclass(frozen=True)
class ValidationConfig:
    """Every size and setting of one validation run (recorded in each results JSON)."""

    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    train_limit: int | None = 2000       # training images (None: the whole training split)
    test_limit: int | None = 1000        # test-split images for test accuracy
    # deep networks
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    vgg_width: int = 16                  # first-layer filters of VGG11
    vgg_wide_width: int = 32             # the second width of "width vs width"
    resnet_width: int = 16               # first-layer filters of ResNet20
    snapshots_per_run: int = 12          # first-layer snapshots along training (trajectories)
    lr_factors: tuple[float, ...] = (0.5,)  # extra learning rates (x lr) for the tau investigation
    # linear CNN (exact dynamics)
    linear_images: int = 1000
    linear_filters: int = 64
    linear_train_steps: int = 200        # full-batch float64 steps trained to check `simulate`
    linear_lr_fraction: float = 0.5      # lr as a fraction of the largest stable lr
    linear_trajectory_points: int = 25   # log-spaced steps from 1 to well past whitening
    autocorr_images: int = 256           # images used for the output autocorrelation
    autocorr_lags: tuple[int, ...] = (1, 2, 3)
    kernel_size: int = 3
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CONFIGS: dict[str, ValidationConfig] = {
    "smoke": ValidationConfig(
        name="smoke", train_limit=40, test_limit=20, epochs=2, batch_size=40, vgg_width=4, vgg_wide_width=6,
        resnet_width=4, snapshots_per_run=2, linear_images=24, linear_filters=8, linear_train_steps=4,
        linear_trajectory_points=5, autocorr_images=8,
    ),
    "cpu": ValidationConfig(name="cpu", lr_factors=(0.5, 0.25), linear_images=500, linear_filters=16, linear_train_steps=30),
    "gpu": ValidationConfig(
        name="gpu", train_limit=None, test_limit=None, epochs=30, batch_size=128,
        vgg_width=64, vgg_wide_width=128, resnet_width=16, snapshots_per_run=30, lr_factors=(0.5, 0.25),
        linear_images=10000, linear_train_steps=200, linear_trajectory_points=40, autocorr_images=1000,
    ),
}


def get_config(name: str) -> ValidationConfig:
    """The named configuration; LinearCNNInputError (one line) for an unknown name."""
    if name not in CONFIGS:
        raise LinearCNNInputError(f"config {name!r} is not known; expected one of {', '.join(CONFIGS)}", parameter="config")
    return CONFIGS[name]

"""Training: the linear CNN and deep CNNs, true or random labels, checkpoints that carry everything.

    result = train(TrainConfig(arch="vgg11", data="builtin", labels="random", epochs=10, out="runs/x"))
    results = train_seeds(config, [0, 1, 2])          # DIR/seed0, DIR/seed1, ... one after another
    results = train_seeds(config, [0, 1, 2], together=True)   # the same models, trained as one vmapped stack

What one run does, in order (PAPER.md section 4 "training setting" for the defaults: plain SGD,
lr 0.01, batch 256, no augmentation, per-channel normalisation):

1. Check the configuration and the output folder (before any heavy work).
2. Load the data (`linearcnn.data.load_dataset`), normalise it once per channel
   (`dataset.normalized()`) and keep it resident on the training device.
3. Build the targets. Classifiers (every arch but `linear`) use class indices: the true labels, or
   with `labels="random"` a seeded uniform draw `draw_random_labels(N, num_classes, label_seed)`,
   uncorrelated with the images and stored in the checkpoint. The scalar `linear` model regresses
   on y = +1 for an even class index and -1 for an odd one (`parity_targets`): for a two-class set
   this is +-1 by class, for random labels the draw has two classes, so y is a seeded Rademacher
   draw (PAPER.md section 2, assumption (b)).
4. Build the model from the seed (`linearcnn.models.build_model`), check that `lr` is stable for
   the linear models (`linear_gd_hessian_max_eigenvalue`), and train: the data order of epoch e
   is a permutation drawn from (seed, e) alone, so an interrupted run can be resumed exactly;
   full-batch runs (batch_size >= N) use the data in order, without a permutation.
5. Every `checkpoint_seconds` (at an epoch end) and at the end, write `checkpoint.pt` and
   `metrics.json` atomically (rank 0 only).

Losses. `linear`: L = (1/N) sum_x (f(x) - y(x))^2 with f the mean over filters and locations, so
each filter moves by -lr * (2/K) * (A wbar - b) per full-batch step (A, b as in PAPER.md section 2
with the mean-patch vectors of `linearcnn.models.mean_patches`). `linear-multi` with MSE: the mean
over classes and images of (out - onehot)^2. Deep nets: cross-entropy (override with `loss`).

Speed (CUDA): data resident on the device, no host sync inside a step (loss and accuracy sums
are kept on the device and read once per epoch; every sync point is commented), bf16 autocast
and channels_last for the deep nets, cudnn autotuning, optional `torch.compile`.

Distributed: under torchrun (WORLD_SIZE > 1) the process group is initialised (gloo on CPU, nccl
on CUDA), the model wrapped in DistributedDataParallel, and every global batch split into
`world_size` contiguous shards; each rank's loss is scaled by world_size / global_batch, so the
averaged gradient is exactly the global-batch mean gradient. Only rank 0 writes files.

Several seeds run one after another (`train_seeds`), or together as one vmapped stack of models
(`train_seeds(..., together=True)`, `linearcnn.train_together`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import linearcnn
from linearcnn._files import atomic_save, atomic_write_text, check_writable_file
from linearcnn.errors import LinearCNNInputError
from linearcnn.models import (
    ARCHS,
    DEFAULT_LINEAR_INIT_STD,
    DEFAULT_WIDTH,
    LINEAR_ARCHS,
    LinearCNN,
    LinearCNNMulti,
    build_model,
    build_seeded_model,
    check_arch,
    default_kernel_size,
    first_layer,
    first_layer_name,
    mean_patches,
    unwrap_model,
)
from linearcnn.device import resolve_device

CHECKPOINT_FORMAT = "linearcnn-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"

LABEL_CHOICES = ("true", "random")
OPTIMIZER_CHOICES = ("sgd", "adam")
LOSS_CHOICES = ("auto", "mse", "cross-entropy")
PRECISION_CHOICES = ("auto", "float32", "float64", "bf16")
READOUT_CHOICES = ("fixed", "trainable")
DEFAULT_RANDOM_CLASSES = 10  # classes of a random-label draw on unlabelled data

# Fields that say how long / where / on what a run goes, not what it computes: they may differ
# between a checkpoint and the run that resumes it.
RUN_CONTROL_FIELDS = frozenset(
    {"epochs", "steps", "out", "resume", "overwrite", "device", "compile", "checkpoint_seconds", "test", "test_limit", "test_every"}
)
SYNC_BN_CHOICES = ("auto", "on", "off")
# Per-epoch lists (epoch, step, loss, accuracy, seconds, images_per_second), one entry per step
# (step_loss: the batch's mean loss) and per test evaluation (test_step, test_loss, test_accuracy).
METRIC_KEYS = (
    "epoch", "step", "loss", "accuracy", "seconds", "images_per_second", "step_loss", "test_step", "test_loss", "test_accuracy",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoint as `config`).

    `width` / `kernel_size` None mean the architecture's defaults (`linearcnn.models.DEFAULT_WIDTH`,
    3, or 7 for resnet18); `loss` "auto" means MSE for the linear models and cross-entropy for the
    deep ones; `label_seed` None means `seed`; `steps`, when given, stops the run after that many
    optimizer steps in total (otherwise `epochs` passes over the data); `snapshot_every` N > 0
    keeps the first layer at steps 0, N, 2N, ...; `precision` "auto" is bf16 autocast on CUDA for
    the deep nets and float32 otherwise ("float64" for exact linear-CNN comparisons); `test`
    evaluates loss and accuracy on the data's test split (its first `test_limit` images) every
    `test_every` epochs (0: only at the end) and at the end, when the data has a labelled test split; `sync_bn` "auto" turns the
    BatchNorm layers into SyncBatchNorm under torchrun on CUDA (BatchNorm statistics over the global
    batch, as in one process), "on" demands it (an error on CPU, where torch has no SyncBatchNorm),
    "off" keeps per-process statistics.
    """

    arch: str = "vgg11"
    data: str = "builtin"
    labels: str = "true"
    epochs: int = 30
    steps: int | None = None
    lr: float = 0.01
    batch_size: int = 256
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    label_seed: int | None = None
    num_classes: int | None = None
    freeze_first_layer: bool = False
    width: int | None = None
    kernel_size: int | None = None
    init_std: float = DEFAULT_LINEAR_INIT_STD
    readout: str = "fixed"
    loss: str = "auto"
    limit: int | None = None
    snapshot_every: int = 0
    precision: str = "auto"
    compile: bool = False
    device: str = "auto"
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_seconds: float = 300.0
    test: bool = True
    test_limit: int | None = None
    test_every: int = 1
    sync_bn: str = "auto"

    def validate(self) -> TrainConfig:
        """Raise LinearCNNInputError (one line) for a value no run could use; return self."""
        check_arch(self.arch)
        for name, value, choices in (
            ("--labels", self.labels, LABEL_CHOICES),
            ("--optimizer", self.optimizer, OPTIMIZER_CHOICES),
            ("--loss", self.loss, LOSS_CHOICES),
            ("--precision", self.precision, PRECISION_CHOICES),
            ("--readout", self.readout, READOUT_CHOICES),
            ("--sync-bn", self.sync_bn, SYNC_BN_CHOICES),
        ):
            if value not in choices:
                raise LinearCNNInputError(f"{name} {value!r} is not valid; expected one of {', '.join(choices)}")
        positive_ints = [("--epochs", self.epochs), ("--batch-size", self.batch_size)]
        positive_ints += [(n, v) for n, v in (("--steps", self.steps), ("--width", self.width),
                          ("--kernel-size", self.kernel_size), ("--limit", self.limit),
                          ("--num-classes", self.num_classes), ("--test-limit", self.test_limit)) if v is not None]
        for name, value in positive_ints:
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise LinearCNNInputError(f"{name} must be a positive integer, got {value}")
        if self.test_every < 0:
            raise LinearCNNInputError(f"--test-every must be >= 0 (0: only at the end), got {self.test_every}")
        if self.snapshot_every < 0:
            raise LinearCNNInputError(f"--snapshot-every must be >= 0 (0: no snapshots), got {self.snapshot_every}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LinearCNNInputError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise LinearCNNInputError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not self.weight_decay >= 0:
            raise LinearCNNInputError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.init_std) and self.init_std > 0):
            raise LinearCNNInputError(f"--init-std must be a positive number, got {self.init_std}")
        if self.arch == "linear" and self.loss == "cross-entropy":
            raise LinearCNNInputError("--loss cross-entropy needs class outputs; --arch linear has one scalar output (use mse)")
        if self.freeze_first_layer and (self.arch == "linear" or (self.arch == "linear-multi" and self.readout == "fixed")):
            raise LinearCNNInputError(
                f"--freeze-first-layer with --arch {self.arch} leaves nothing to train"
                + (" (use --readout trainable)" if self.arch == "linear-multi" else "")
            )
        return self

    def resolved(self) -> TrainConfig:
        """A copy with the architecture defaults filled in (width, kernel_size, loss, label_seed)."""
        return dataclasses.replace(
            self,
            width=DEFAULT_WIDTH[self.arch] if self.width is None else int(self.width),
            kernel_size=default_kernel_size(self.arch) if self.kernel_size is None else int(self.kernel_size),
            loss=("mse" if self.arch in LINEAR_ARCHS else "cross-entropy") if self.loss == "auto" else self.loss,
            label_seed=self.seed if self.label_seed is None else self.label_seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainingData:
    """The training set as the loop sees it: normalised, resident on the device, with targets."""

    images: torch.Tensor  # (N, C, H, W) normalised per channel, on the device
    targets: torch.Tensor  # (N,) float +-1 for `linear`, int64 class indices otherwise, on the device
    num_classes: int  # classes of the labels (2 for `linear`: the parity classes)
    random_labels: torch.Tensor | None  # (N,) int64 draw on the CPU, None for true labels
    info: dict[str, Any]  # spec, sizes, classes, channel mean/std: stored in the checkpoint


@dataclass
class TrainResult:
    """What `train` returns; the checkpoint on disk holds the same (see `checkpoint_dict`)."""

    config: TrainConfig  # resolved (defaults filled in)
    model: nn.Module  # the plain trained model, on `device`
    first_layer: str  # its first conv's module name ("conv", "features.0", "conv1")
    initial_first_layer: torch.Tensor  # (K, C, k, k) CPU, the weights at step 0
    snapshot_steps: torch.Tensor  # (S,) int64
    snapshot_weights: torch.Tensor  # (S, K, C, k, k) CPU
    metrics: dict[str, Any]
    random_labels: torch.Tensor | None
    checkpoint_path: Path | None  # None when no `out` was given (or on ranks > 0)
    device: str
    world_size: int = 1
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    data_info: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=lambda: {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0})


# ---------------------------------------------------------------------------------------------
# Labels and targets


def draw_random_labels(num_images: int, num_classes: int, seed: int) -> torch.Tensor:
    """Random labels: `torch.randint(num_classes, (N,))` from a CPU generator seeded with `seed`. (N,) int64."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, int(num_classes), (int(num_images),), generator=generator)


def parity_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets of the scalar linear model: +1 for an even class index, -1 for an odd one. (N,) float32."""
    return 1.0 - 2.0 * (labels % 2).to(torch.float32)


def _num_classes(config: TrainConfig, dataset: Any) -> int:
    labels = getattr(dataset, "labels", None)
    if config.arch == "linear":
        return 2
    if config.num_classes is not None:
        if labels is not None and config.labels == "true" and len(labels) and int(np.max(labels)) >= config.num_classes:
            raise LinearCNNInputError(
                f"--num-classes {config.num_classes} is too small for data {dataset.spec!r}: it has label {int(np.max(labels))}"
            )
        return int(config.num_classes)
    if config.labels == "random" and labels is None:
        return DEFAULT_RANDOM_CLASSES
    if getattr(dataset, "classes", None):
        return len(dataset.classes)
    return int(np.max(labels)) + 1


def training_targets(
    config: TrainConfig, true_labels: Any, num_images: int, num_classes: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(targets (N,) on the CPU, the random-label draw (N,) or None) for a resolved config.

    Random labels are `draw_random_labels(N, num_classes, config.label_seed)`; `linear` regresses
    on their (or the true labels') parity, the classifiers on the class indices.
    """
    if config.labels == "random":
        random_labels: torch.Tensor | None = draw_random_labels(num_images, num_classes, int(config.label_seed))  # type: ignore[arg-type]
        labels = random_labels
    else:
        random_labels = None
        labels = torch.as_tensor(np.asarray(true_labels), dtype=torch.int64)
    if config.arch == "linear":
        return parity_targets(labels).to(dtype), random_labels  # (N,) +-1
    return labels, random_labels  # (N,) class indices


def prepare_training_data(config: TrainConfig, dataset: Any, device: torch.device, dtype: torch.dtype) -> TrainingData:
    """Normalise `dataset` once, check it against the config, build the targets, move to `device`.

    `config` must be resolved. Raises LinearCNNInputError for a kernel larger than the images,
    true labels on an unlabelled set, or an empty set.
    """
    images_np = np.asarray(dataset.images)
    if images_np.ndim != 4 or images_np.shape[0] == 0:
        raise LinearCNNInputError(f"data {dataset.spec!r} gave images of shape {images_np.shape}; expected (N, C, H, W) with N >= 1")
    n, c, h, w = images_np.shape
    k = int(config.kernel_size)  # type: ignore[arg-type]
    if k > h or k > w:
        raise LinearCNNInputError(f"--kernel-size {k} is larger than the images ({h}x{w}) of data {dataset.spec!r}")
    if config.labels == "true" and dataset.labels is None:
        raise LinearCNNInputError(f"--labels true: data {dataset.spec!r} has no labels; use --labels random")
    num_classes = _num_classes(config, dataset)
    targets, random_labels = training_targets(config, dataset.labels, n, num_classes, dtype)
    mean, std = dataset.channel_stats()
    normalized = torch.from_numpy(np.ascontiguousarray(dataset.normalized()))  # (N, C, H, W) float32
    info = {
        "spec": str(dataset.spec),
        "description": str(getattr(dataset, "description", "")),
        "num_images": int(n),
        "channels": int(c),
        "height": int(h),
        "width": int(w),
        "classes": [str(x) for x in getattr(dataset, "classes", [])],
        "num_classes": int(num_classes),
        "channel_mean": [float(x) for x in np.asarray(mean, dtype=np.float64)],
        "channel_std": [float(x) for x in np.asarray(std, dtype=np.float64)],
    }
    return TrainingData(
        images=normalized.to(device=device, dtype=dtype),  # the one host->device copy of the data
        targets=targets.to(device),
        num_classes=num_classes,
        random_labels=random_labels,
        info=info,
    )


@dataclass
class HeldOutData:
    """The test split as the evaluation sees it: normalised with the training set's statistics."""

    images: torch.Tensor  # (M, C, H, W) on the device
    targets: torch.Tensor  # (M,) like TrainingData.targets, from the test split's true labels
    info: dict[str, Any]  # spec, description, num_images: stored in the checkpoint


def load_test_dataset(config: TrainConfig) -> Any:
    """The test split of `config.data` (its first `config.test_limit` images), or None without one."""
    from linearcnn.data import has_test_split, load_dataset

    if not config.test or not has_test_split(config.data):
        return None
    return load_dataset(config.data, train=False, limit=config.test_limit)


def prepare_test_data(config: TrainConfig, test_dataset: Any, data: TrainingData, device: torch.device, dtype: torch.dtype) -> HeldOutData | None:
    """Normalise a test split with the training statistics and build its targets; None if it has no labels.

    `config` must be resolved. The targets follow the true test labels whatever `config.labels`
    is (a random-label run should be at chance on them). Raises LinearCNNInputError when the test
    images differ in shape from the training images or carry a class the model has no output for.
    """
    if test_dataset is None or getattr(test_dataset, "labels", None) is None:
        return None
    spec = str(getattr(test_dataset, "spec", config.data))
    images_np = np.asarray(test_dataset.images)
    expected = (data.info["channels"], data.info["height"], data.info["width"])
    if images_np.ndim != 4 or tuple(images_np.shape[1:]) != expected or images_np.shape[0] == 0:
        raise LinearCNNInputError(
            f"test split of data {spec!r} has images of shape {images_np.shape}; expected (M, {', '.join(map(str, expected))}) like the training images"
        )
    count = images_np.shape[0] if config.test_limit is None else min(images_np.shape[0], int(config.test_limit))
    labels = torch.as_tensor(np.asarray(test_dataset.labels)[:count], dtype=torch.int64)  # (M,)
    if config.arch == "linear":
        targets = parity_targets(labels).to(dtype)  # (M,) +-1
    else:
        if int(labels.max()) >= data.num_classes:
            raise LinearCNNInputError(
                f"test split of data {spec!r} has label {int(labels.max())}; the model has {data.num_classes} classes"
            )
        targets = labels
    mean = np.asarray(data.info["channel_mean"], dtype=np.float64)
    std = np.asarray(data.info["channel_std"], dtype=np.float64)
    normalized = torch.from_numpy(np.ascontiguousarray(test_dataset.normalized(mean, std)[:count]))  # (M, C, H, W)
    info = {"spec": spec, "description": str(getattr(test_dataset, "description", "")), "num_images": int(count)}
    return HeldOutData(images=normalized.to(device=device, dtype=dtype), targets=targets.to(device), info=info)


# ---------------------------------------------------------------------------------------------
# Stability of the linear models


def linear_gd_hessian_max_eigenvalue(model: nn.Module, images: torch.Tensor, *, chunk: int = 4096) -> float:
    """Largest eigenvalue of the Hessian of the MSE loss in the filters, for the linear models.

    With A = (1/N) sum_x pbar(x) pbar(x)^T (the second moment of the mean patches, float64):
    `LinearCNN`: f = (1/K) sum_k w_k . pbar, L = mean (f - y)^2, so H = (2/K^2) (1 1^T) kron A and
    lambda_max(H) = 2 lambda_max(A) / K. `LinearCNNMulti` (fixed readout R, classes x K):
    L = mean over images and classes, H = (2/C) (R^T R) kron A, lambda_max(H) = (2/C) lambda_max(R^T R) lambda_max(A).
    Full-batch gradient descent with step lr is stable iff lr * lambda_max(H) < 2.
    """
    model = unwrap_model(model)
    conv = first_layer(model)
    kernel_size = int(conv.kernel_size[0])
    d = conv.in_channels * kernel_size * kernel_size
    second_moment = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], chunk):
        patches = mean_patches(images[start : start + chunk].to(torch.float64), kernel_size)  # (n, d)
        second_moment += patches.T @ patches  # (d, d)
    second_moment /= images.shape[0]
    lambda_a = float(torch.linalg.eigvalsh(second_moment.cpu())[-1])
    if isinstance(model, LinearCNN):
        return 2.0 * lambda_a / conv.out_channels
    if isinstance(model, LinearCNNMulti):
        readout = model.readout.weight.detach().to(torch.float64).cpu()  # (C, K)
        lambda_r = float(torch.linalg.eigvalsh(readout.T @ readout)[-1])
        return 2.0 * lambda_r * lambda_a / readout.shape[0]
    raise LinearCNNInputError(f"the stability bound is defined for the linear models only, not {type(model).__name__}")


def check_linear_lr(config: TrainConfig, model: nn.Module, images: torch.Tensor) -> float | None:
    """Raise LinearCNNInputError if `config.lr` makes full-batch GD on a linear model diverge.

    Applies to `linear`, and to `linear-multi` with MSE and a fixed readout (otherwise the loss is
    not quadratic in the filters and None is returned). The bound lr * lambda_max(H) < 2 is that of
    full-batch gradient descent; mini-batch SGD is checked against the same bound. Returns the
    largest stable lr.
    """
    if config.arch not in LINEAR_ARCHS or (config.arch == "linear-multi" and (config.readout != "fixed" or config.loss != "mse")):
        return None
    from linearcnn.theory import max_stable_lr  # the stable region lr * max eigenvalue < 2

    hessian_max = linear_gd_hessian_max_eigenvalue(model, images)
    if not hessian_max > 0:
        return None
    lr_bound = max_stable_lr(np.array([hessian_max]))
    if config.lr >= lr_bound:
        raise LinearCNNInputError(
            f"--lr {config.lr:g} is unstable for --arch {config.arch}: lr * lambda_max(H) = {config.lr * hessian_max:.4g} >= 2, "
            f"where lambda_max(H) = {hessian_max:.4g} is the largest eigenvalue of the full-batch GD Hessian "
            f"(from the mean-patch second moment of the normalised data); use --lr < {lr_bound:.4g}"
        )
    return lr_bound


# ---------------------------------------------------------------------------------------------
# Devices, precision, distribution


def _precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter/data dtype, autocast dtype or None)."""
    if config.precision == "float64":
        return torch.float64, None
    if config.precision == "bf16":
        return torch.float32, torch.bfloat16
    if config.precision == "auto" and device.type == "cuda" and config.arch not in LINEAR_ARCHS:
        return torch.float32, torch.bfloat16
    return torch.float32, None


def _use_sync_bn(config: TrainConfig, model: nn.Module, device: torch.device, world_size: int) -> bool:
    """Whether to turn BatchNorm into SyncBatchNorm (see TrainConfig; `train` refuses "on" without CUDA)."""
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return config.sync_bn != "off" and has_batch_norm and world_size > 1 and device.type == "cuda"


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def _distributed(device: torch.device) -> Iterator[tuple[_Dist, torch.device]]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA).

    The group is created once per process and then reused (re-creating a group after destroying
    it can hang under torchrun's rendezvous); it is destroyed when the process exits.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield _Dist(), device
        return
    import atexit

    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    yield _Dist(rank=dist.get_rank(), world_size=dist.get_world_size()), device


def _epoch_order(seed: int, epoch: int, num_images: int) -> torch.Tensor:
    """The data order of one epoch: a permutation drawn from (seed, epoch) alone. (N,) int64 CPU."""
    state = np.random.SeedSequence([int(seed), int(epoch), 0x5EED]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(num_images, generator=generator)


def versions() -> dict[str, str]:
    """Package versions recorded in every result file."""
    return {
        "linearcnn": linearcnn.__version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------
# Checkpoints (our format; `linearcnn.checkpoints` reads it for analysis)


def checkpoint_path_for(out: str | os.PathLike) -> Path:
    return Path(out) / CHECKPOINT_NAME


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our training checkpoints (weights_only), checking its format; LinearCNNInputError otherwise."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a foreign or damaged file: say so in one line)
        raise LinearCNNInputError(f"checkpoint {str(path)!r} cannot be read as a linearcnn training checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise LinearCNNInputError(f"checkpoint {str(path)!r} has format {found!r}; expected {CHECKPOINT_FORMAT!r}")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r} has format_version {checkpoint.get('format_version')!r}; expected {CHECKPOINT_VERSION}"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the trained model (CPU, float32 unless trained in float64) from a checkpoint alone."""
    spec = checkpoint["model"]
    model = build_model(
        spec["arch"], spec["in_channels"], spec["num_classes"], width=spec["width"], kernel_size=spec["kernel_size"],
        init_std=spec["init_std"], trainable_readout=spec["trainable_readout"],
    )
    state = checkpoint["model_state_dict"]
    if any(v.dtype == torch.float64 for v in state.values()):
        model = model.double()
    model.load_state_dict(state)
    return model


def _check_resume(checkpoint: dict[str, Any], config: TrainConfig, path: Path) -> None:
    stored = checkpoint.get("config", {})
    current = config.to_dict()
    defaults = TrainConfig().to_dict()  # a field newer than the checkpoint had its default value then
    for key in current:
        if key in RUN_CONTROL_FIELDS:
            continue
        if stored.get(key, defaults[key]) != current[key]:
            raise LinearCNNInputError(
                f"--resume: checkpoint {str(path)!r} was trained with {key}={stored.get(key, defaults[key])!r}, this run asks for "
                f"{key}={current[key]!r}; resume with the same settings or choose another --out"
            )


# ---------------------------------------------------------------------------------------------
# The loop


def _per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str, num_classes: int) -> torch.Tensor:
    """(B,) per-image losses: squared error (mean over classes) or cross-entropy."""
    if loss == "mse":
        if outputs.ndim == 1:
            return (outputs - targets) ** 2  # (B,)
        onehot = F.one_hot(targets, num_classes).to(outputs.dtype)  # (B, classes)
        return ((outputs - onehot) ** 2).mean(dim=1)  # (B,)
    return F.cross_entropy(outputs, targets, reduction="none")  # (B,)


def _is_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) bool right answers (sign for `linear`, argmax otherwise)."""
    if outputs.ndim == 1:
        return torch.sign(outputs) == torch.sign(targets)
    return outputs.argmax(dim=1) == targets


def _num_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of right answers as a 0-d tensor on the device."""
    return _is_correct(outputs, targets).sum()


@torch.no_grad()
def _evaluate(
    forward: Any, model: nn.Module, test: HeldOutData, config: TrainConfig, num_classes: int, dtype: torch.dtype,
    autocast: Any, *, models: int = 1, rank: int = 0, world_size: int = 1,
) -> torch.Tensor:
    """(models, 2) float64 on the device: [sum of per-image losses, number right] over this rank's test shard.

    `forward(images)` returns (models, b) or (models, b, classes): one row per model trained
    together (`models`, 1 for a plain run). `model` is put in eval mode for the pass (BatchNorm running
    statistics) and back in train mode after it. No host sync.
    """
    num = test.images.shape[0]
    lo, hi = (num * rank) // world_size, (num * (rank + 1)) // world_size  # this rank's contiguous shard
    batch = max(1, config.batch_size)
    model.eval()
    sums = None
    try:
        for start in range(lo, hi, batch):
            images = test.images[start : min(start + batch, hi)]  # (b, C, H, W)
            targets = test.targets[start : min(start + batch, hi)]  # (b,)
            with autocast:
                outputs = forward(images)  # (models, b[, classes])
            b = outputs.shape[1]
            flat = outputs.to(dtype).reshape(models * b, *outputs.shape[2:])  # (models*b[, classes])
            repeated = targets.repeat(models)  # (models*b,)
            losses = _per_sample_loss(flat, repeated, config.loss, num_classes).reshape(models, b).sum(dim=1)  # (models,)
            right = _is_correct(flat, repeated).reshape(models, b).sum(dim=1)  # (models,)
            part = torch.stack([losses.to(torch.float64), right.to(torch.float64)], dim=1)  # (models, 2)
            sums = part if sums is None else sums + part
    finally:
        model.train()
    if sums is None:  # an empty shard (more ranks than test images)
        sums = torch.zeros(models, 2, dtype=torch.float64, device=test.images.device)
    return sums


class _Progress:
    """A rich progress bar over steps, or nothing (not a tty, --quiet, or ranks > 0)."""

    def __init__(self, enabled: bool, total: int, completed: int, title: str):
        self._bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task(title, total=total, completed=completed, stats="")

    def __enter__(self) -> _Progress:  # noqa: PYI034
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stats(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, stats=text)


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only when stderr is a terminal and not --quiet."""
    return not quiet and sys.stderr.isatty()


def _check_out_dir(config: TrainConfig, is_main: bool) -> Path | None:
    """Create/check the output folder before any heavy work; return the checkpoint path."""
    if config.out is None:
        if config.resume:
            raise LinearCNNInputError("--resume needs --out: the folder holding the checkpoint to continue")
        return None
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise LinearCNNInputError(f"--out {str(out)!r} is a file; expected a folder")
    if is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LinearCNNInputError(f"--out {str(out)!r} cannot be created ({exc.strerror or exc}); choose a writable folder") from None
    path = checkpoint_path_for(out)
    if is_main:
        check_writable_file(path, "--out checkpoint")
    if path.exists() and not (config.resume or config.overwrite):
        raise LinearCNNInputError(
            f"--out {str(out)!r} already holds {CHECKPOINT_NAME}; pass --resume to continue it, --overwrite to replace it, or another --out"
        )
    return path


def _load_dataset(config: TrainConfig) -> Any:
    from linearcnn.data import load_dataset  # imported here: data loading is only needed for a run

    return load_dataset(config.data, limit=config.limit)


def seeded_model_for(config: TrainConfig, channels: int, num_classes: int, dtype: torch.dtype) -> nn.Module:
    """The model of a resolved config, initialised from `config.seed` alone (global RNG untouched), on the CPU.

    With `freeze_first_layer`, the first layer's parameters do not require gradients.
    """
    model = build_seeded_model(
        config.arch, channels, num_classes, seed=config.seed, width=config.width, kernel_size=config.kernel_size,
        init_std=config.init_std, trainable_readout=config.readout == "trainable",
    ).to(dtype=dtype)
    if config.freeze_first_layer:
        for parameter in first_layer(model).parameters():
            parameter.requires_grad_(False)
    return model


def model_spec(config: TrainConfig, channels: int, num_classes: int) -> dict[str, Any]:
    """What `model_from_checkpoint` needs to rebuild the model (stored as the checkpoint's `model`)."""
    return {
        "arch": config.arch,
        "in_channels": int(channels),
        "num_classes": int(num_classes),
        "width": int(config.width),  # type: ignore[arg-type]
        "kernel_size": int(config.kernel_size),  # type: ignore[arg-type]
        "init_std": float(config.init_std),
        "trainable_readout": config.readout == "trainable",
    }


def optimizer_for(config: TrainConfig, parameters: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """The configured optimizer over `parameters` (SGD with momentum / weight decay, or Adam)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def train(config: TrainConfig, *, dataset: Any = None, test_dataset: Any = None, progress: bool = False) -> TrainResult:
    """Train one model (seed `config.seed`) as configured; see the module docstring.

    `dataset` (an `linearcnn.data.ImageDataset`) replaces loading `config.data` (its `spec` is
    recorded); `test_dataset` replaces loading the test split of `config.data` (with `dataset`
    given and no `test_dataset`, nothing is evaluated). With `config.out`, writes
    `out/checkpoint.pt` and `out/metrics.json` (rank 0). `progress` shows a progress bar (pass
    `progress_enabled(quiet)`).
    """
    config = config.validate().resolved()
    if dataset is not None and getattr(dataset, "spec", None) and dataset.spec != config.data:
        config = dataclasses.replace(config, data=str(dataset.spec))  # record where the images came from
    device = resolve_device(config.device)
    if config.sync_bn == "on" and device.type != "cuda":  # checked before anything is written
        raise LinearCNNInputError(f"--sync-bn on needs CUDA (torch's SyncBatchNorm does not run on {device.type}); use --sync-bn auto or off")
    with _distributed(device) as (dist_info, device):
        return _train(config, dataset, test_dataset, progress and dist_info.is_main, device, dist_info)


def _train(
    config: TrainConfig, dataset: Any, test_dataset: Any, show_progress: bool, device: torch.device, dist_info: _Dist
) -> TrainResult:
    checkpoint_path = _check_out_dir(config, dist_info.is_main)
    resume_state: dict[str, Any] | None = None
    if config.resume and checkpoint_path is not None and checkpoint_path.exists():
        resume_state = load_training_checkpoint(checkpoint_path)
        _check_resume(resume_state, config, checkpoint_path)

    if dataset is None:
        dataset = _load_dataset(config)
        if test_dataset is None:
            test_dataset = load_test_dataset(config)
    dtype, autocast_dtype = _precision(config, device)
    data = prepare_training_data(config, dataset, device, dtype)
    test = prepare_test_data(config, test_dataset, data, device, dtype) if config.test else None
    if test is not None:
        data.info["test"] = test.info
    num_images, channels = data.images.shape[0], data.images.shape[1]
    if resume_state is not None:
        stored_channels = resume_state.get("model", {}).get("in_channels")
        if stored_channels != channels:
            raise LinearCNNInputError(
                f"--resume: checkpoint {str(checkpoint_path)!r} is for {stored_channels}-channel images, data {config.data!r} has {channels}"
            )
        stored_n = resume_state.get("data", {}).get("num_images")
        if stored_n != num_images:
            raise LinearCNNInputError(
                f"--resume: checkpoint {str(checkpoint_path)!r} was trained on {stored_n} images, data {config.data!r} has {num_images}"
            )

    model = seeded_model_for(config, channels, data.num_classes, dtype)
    if _use_sync_bn(config, model, device, dist_info.world_size):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters and state-dict keys
    layer_name = first_layer_name(model)
    conv = first_layer(model)
    initial_first_layer = conv.weight.detach().clone()  # (K, C, k, k) CPU
    check_linear_lr(config, model, data.images)

    channels_last = device.type == "cuda" and config.arch not in LINEAR_ARCHS
    model = model.to(device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        data.images = data.images.contiguous(memory_format=torch.channels_last)  # (N, C, H, W) NHWC strides
    optimizer = optimizer_for(config, [p for p in model.parameters() if p.requires_grad])

    metrics: dict[str, Any] = {key: [] for key in METRIC_KEYS}
    snapshot_steps: list[int] = []
    snapshot_weights: list[torch.Tensor] = []
    epoch = step = epoch_step = 0
    partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
    if resume_state is not None:
        if initial_first_layer.shape != resume_state["first_layer"]["initial_weight"].shape:
            raise LinearCNNInputError(f"--resume: checkpoint {str(checkpoint_path)!r} has a first layer of another shape")
        unwrap_model(model).load_state_dict(resume_state["model_state_dict"])
        optimizer.load_state_dict(resume_state["optimizer_state_dict"])
        initial_first_layer = resume_state["first_layer"]["initial_weight"].to(dtype)
        metrics = {key: list(resume_state["metrics"].get(key, [])) for key in METRIC_KEYS}
        snapshot_steps = [int(s) for s in resume_state["snapshots"]["steps"]]
        snapshot_weights = [w.to(device=device, dtype=dtype) for w in resume_state["snapshots"]["weights"]]
        epoch, step, epoch_step = int(resume_state["epoch"]), int(resume_state["step"]), int(resume_state["epoch_step"])
        partial = dict(resume_state["partial_epoch"])
        torch.set_rng_state(resume_state["rng_state"]["torch"])
        if config.labels == "random" and not torch.equal(resume_state["random_labels"], data.random_labels):
            raise LinearCNNInputError(f"--resume: checkpoint {str(checkpoint_path)!r} holds other random labels than this run draws")
    elif config.snapshot_every > 0:
        snapshot_steps.append(0)
        snapshot_weights.append(conv.weight.detach().clone())

    step_model: nn.Module = model
    if dist_info.world_size > 1:
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        step_model = torch.compile(step_model)  # type: ignore[assignment]

    batch_size = min(config.batch_size, num_images)
    full_batch = batch_size >= num_images
    steps_per_epoch = math.ceil(num_images / batch_size)
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    loss_scale = dist_info.world_size  # DDP averages gradients over ranks; undo it so the sum / B is exact
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # static shapes: let cuDNN pick the fastest kernels

    def save(final: bool) -> None:
        if checkpoint_path is None or not dist_info.is_main:
            return
        checkpoint = checkpoint_dict(
            config=config, model=model, optimizer_state=optimizer.state_dict(), layer_name=layer_name,
            initial_first_layer=initial_first_layer, snapshot_steps=snapshot_steps, snapshot_weights=snapshot_weights,
            epoch=epoch, step=step, epoch_step=epoch_step, metrics=metrics, partial=partial,
            random_labels=data.random_labels, data_info=data.info, model_spec=model_spec(config, channels, data.num_classes),
        )
        atomic_save(checkpoint_path, lambda tmp: torch.save(checkpoint, tmp))
        summary = _metrics_summary(config, metrics, partial, epoch, step, device, dist_info.world_size, final)
        atomic_write_text(checkpoint_path.parent / METRICS_NAME, json.dumps(summary, indent=2) + "\n")

    last_save = time.perf_counter()
    model.train()
    title = f"{config.arch} seed {config.seed}"
    try:
        with _Progress(show_progress, total_steps, step, title) as bar:
            while step < total_steps:
                order = None if full_batch else _epoch_order(config.seed, epoch, num_images).to(device)  # (N,)
                steps_now = min(steps_per_epoch - epoch_step, total_steps - step)
                # Running sums stay on the device; they are read once, at the end of this segment.
                loss_sum = torch.tensor(partial["loss_sum"] if dist_info.is_main else 0.0, dtype=torch.float64, device=device)
                correct = torch.tensor(partial["correct"] if dist_info.is_main else 0.0, dtype=torch.float64, device=device)
                count = int(partial["count"]) if dist_info.is_main else 0
                step_losses = torch.zeros(steps_now, dtype=torch.float64, device=device)  # (S,) local sum / B
                started = time.perf_counter()
                for i in range(steps_now):
                    batch = epoch_step + i
                    lo, hi = batch * batch_size, min((batch + 1) * batch_size, num_images)
                    global_batch = hi - lo
                    # The global batch split into world_size contiguous shards; this rank takes its own.
                    shard_lo = lo + (global_batch * dist_info.rank) // dist_info.world_size
                    shard_hi = lo + (global_batch * (dist_info.rank + 1)) // dist_info.world_size
                    if order is None:
                        images = data.images[shard_lo:shard_hi]  # (b, C, H, W) a view, no copy
                        targets = data.targets[shard_lo:shard_hi]  # (b,)
                    else:
                        index = order[shard_lo:shard_hi]  # (b,)
                        images = data.images.index_select(0, index)  # (b, C, H, W)
                        if channels_last:
                            images = images.contiguous(memory_format=torch.channels_last)  # no-op when already NHWC
                        targets = data.targets.index_select(0, index)  # (b,)
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        outputs = step_model(images)  # (b,) or (b, classes)
                    per_sample = _per_sample_loss(outputs.to(dtype), targets, config.loss, data.num_classes)  # (b,)
                    (per_sample.sum() * (loss_scale / global_batch)).backward()
                    optimizer.step()
                    batch_loss = per_sample.detach().sum()
                    loss_sum += batch_loss
                    correct += _num_correct(outputs.detach(), targets)
                    step_losses[i] = batch_loss / global_batch
                    count += shard_hi - shard_lo
                    step += 1
                    if config.snapshot_every > 0 and step % config.snapshot_every == 0:
                        snapshot_steps.append(step)
                        snapshot_weights.append(conv.weight.detach().clone(memory_format=torch.contiguous_format))
                    bar.advance()
                epoch_step += steps_now
                elapsed = time.perf_counter() - started + float(partial["seconds"])  # training time, without the test pass
                evaluate = _test_now(config, test, epoch_step == steps_per_epoch, epoch + 1, step >= total_steps)
                test_sums = (
                    _evaluate(lambda x: model(x)[None], model, test, config, data.num_classes, dtype, autocast,
                              rank=dist_info.rank, world_size=dist_info.world_size)[0]
                    if evaluate else torch.zeros(2, dtype=torch.float64, device=device)
                )  # (2,) test loss sum, number right
                totals = torch.cat([
                    torch.stack([loss_sum, correct, torch.tensor(float(count), dtype=torch.float64, device=device)]), test_sums, step_losses,
                ])
                if dist_info.world_size > 1:
                    import torch.distributed as dist

                    dist.all_reduce(totals)  # one collective per segment: sums over ranks
                totals_host = totals.cpu().tolist()  # SYNC: the one host-device sync of this epoch segment
                epoch_done = epoch_step == steps_per_epoch
                if epoch_done:
                    epoch, epoch_step = epoch + 1, 0
                partial = book_segment(metrics, totals_host, step=step, epoch=epoch if epoch_done else None,
                                       elapsed=elapsed, test=test if evaluate else None, lr=config.lr)
                if epoch_done:
                    bar.stats(f"epoch {epoch} loss {metrics['loss'][-1]:.4g} acc {metrics['accuracy'][-1]:.3f}")
                if step < total_steps and time.perf_counter() - last_save >= config.checkpoint_seconds:
                    save(final=False)
                    last_save = time.perf_counter()
            if test is not None and (not metrics["test_step"] or metrics["test_step"][-1] != step):
                # resumed from a run that had ended without a test pass: one now, at its last step
                sums = _evaluate(lambda x: model(x)[None], model, test, config, data.num_classes, dtype, autocast,
                                 rank=dist_info.rank, world_size=dist_info.world_size)[0]
                if dist_info.world_size > 1:
                    import torch.distributed as dist

                    dist.all_reduce(sums)
                record_test(metrics, step, sums.cpu().tolist(), test)  # SYNC: once
            save(final=True)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark

    return TrainResult(
        config=config,
        model=model,
        first_layer=layer_name,
        initial_first_layer=initial_first_layer.detach().cpu(),
        snapshot_steps=torch.tensor(snapshot_steps, dtype=torch.int64),
        snapshot_weights=_stack_snapshots(snapshot_weights, initial_first_layer),
        metrics=metrics,
        random_labels=data.random_labels,
        checkpoint_path=checkpoint_path if dist_info.is_main else None,
        device=str(device),
        world_size=dist_info.world_size,
        epoch=epoch,
        step=step,
        data_info=data.info,
        partial=dict(partial),
    )


def _stack_snapshots(weights: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if not weights:
        return torch.zeros((0, *like.shape), dtype=like.dtype)  # (0, K, C, k, k)
    return torch.stack([w.detach().cpu() for w in weights])  # (S, K, C, k, k)


def checkpoint_dict(
    *, config: TrainConfig, model: nn.Module, optimizer_state: dict[str, Any], layer_name: str,
    initial_first_layer: torch.Tensor, snapshot_steps: Sequence[int], snapshot_weights: Sequence[torch.Tensor],
    epoch: int, step: int, epoch_step: int, metrics: dict[str, Any], partial: dict[str, Any],
    random_labels: torch.Tensor | None, data_info: dict[str, Any], model_spec: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint in our format (tensors, primitives, nested dicts/lists: loads with weights_only=True)."""
    plain = unwrap_model(model)
    rng_state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng_state["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_state_dict": {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()},
        "optimizer_state_dict": _to_cpu(optimizer_state),
        "first_layer": {"name": layer_name, "initial_weight": initial_first_layer.detach().cpu().contiguous()},
        "snapshots": {
            "steps": torch.tensor(list(snapshot_steps), dtype=torch.int64),  # (S,)
            "weights": _stack_snapshots(snapshot_weights, initial_first_layer.cpu()),  # (S, K, C, k, k)
        },
        "config": config.to_dict(),
        "seed": int(config.seed),
        "versions": versions(),
        "epoch": int(epoch),
        "step": int(step),
        "epoch_step": int(epoch_step),
        "partial_epoch": dict(partial),
        "metrics": {k: list(v) for k, v in metrics.items()},
        "random_labels": None if random_labels is None else random_labels.cpu(),
        "rng_state": rng_state,
        "data": dict(data_info),
        "model": dict(model_spec),
    }


def _test_now(config: TrainConfig, test: HeldOutData | None, epoch_done: bool, epoch_number: int, last: bool) -> bool:
    """Whether a stretch of steps ends with a test pass: at the end, and every `test_every` epochs."""
    every = config.test_every
    return test is not None and (last or (epoch_done and every > 0 and epoch_number % every == 0))


def record_test(metrics: dict[str, Any], step: int, sums: Sequence[float], test: HeldOutData) -> None:
    """Append one test pass (sums [loss, number right] over the whole test split) to the metrics."""
    count = test.info["num_images"]
    metrics["test_step"].append(int(step))
    metrics["test_loss"].append(sums[0] / count)
    metrics["test_accuracy"].append(sums[1] / count)


def book_segment(
    metrics: dict[str, Any], totals: Sequence[float], *, step: int, epoch: int | None, elapsed: float,
    test: HeldOutData | None, lr: float,
) -> dict[str, Any]:
    """Record one stretch of training steps in `metrics`; return the new partial-epoch sums.

    totals: [loss sum, number right, images, test loss sum, test number right, step losses...]
    summed over ranks; `epoch` is the number of the epoch this stretch completed, or None when it
    stopped inside an epoch (then the running sums are returned, exact, for a resume); `test` is
    the test split when the stretch ended with a test pass (its sums are totals[3:5]).
    Raises LinearCNNInputError when the loss is no longer finite (the run diverged).
    """
    metrics["step_loss"].extend(totals[5:])
    if test is not None:
        record_test(metrics, step, totals[3:5], test)
    loss_total, correct_total, count_total = totals[0], totals[1], round(totals[2])
    if not math.isfinite(loss_total):
        raise LinearCNNInputError(f"training diverged by step {step} (loss {loss_total}) with --lr {lr:g}; use a smaller --lr")
    if epoch is None:
        return {"loss_sum": loss_total, "correct": correct_total, "count": count_total, "seconds": elapsed}
    metrics["epoch"].append(epoch)
    metrics["step"].append(step)
    metrics["loss"].append(loss_total / count_total)
    metrics["accuracy"].append(correct_total / count_total)
    metrics["seconds"].append(elapsed)
    metrics["images_per_second"].append(count_total / elapsed if elapsed > 0 else float("nan"))
    return {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}


def _final(metrics: dict[str, Any], partial: dict[str, Any]) -> dict[str, float]:
    if partial["count"]:
        last = {"loss": partial["loss_sum"] / partial["count"], "accuracy": partial["correct"] / partial["count"]}
    elif metrics["loss"]:
        last = {"loss": metrics["loss"][-1], "accuracy": metrics["accuracy"][-1]}
    else:
        last = {"loss": float("nan"), "accuracy": float("nan")}
    if metrics.get("test_accuracy"):
        last.update(test_loss=metrics["test_loss"][-1], test_accuracy=metrics["test_accuracy"][-1])
    return last


def _metrics_summary(
    config: TrainConfig, metrics: dict[str, Any], partial: dict[str, Any], epoch: int, step: int,
    device: torch.device, world_size: int, final: bool,
) -> dict[str, Any]:
    last = _final(metrics, partial)
    return {
        "config": config.to_dict(), "seed": config.seed, "versions": versions(), "device": str(device),
        "world_size": world_size, "finished": final, "epoch": epoch, "step": step,
        "final": last, "checkpoint": CHECKPOINT_NAME, "metrics": metrics,
    }


def final_metrics(result: TrainResult) -> dict[str, float]:
    """Mean loss and accuracy over the last epoch (or over the last partial epoch, when `steps` ended inside one)."""
    return _final(result.metrics, result.partial)


def seed_out_dir(out: str | os.PathLike, seed: int) -> Path:
    """Where seed `seed` of a several-seed run writes: out/seed{seed}."""
    return Path(out) / f"seed{seed}"


def train_seeds(
    config: TrainConfig, seeds: Sequence[int], *, together: bool = False, dataset: Any = None, test_dataset: Any = None,
    progress: bool = False,
) -> list[TrainResult]:
    """Train one independent model per seed (same data, loaded once): one after another, or
    `together` as one vmapped stack (`linearcnn.train_together`).

    With several seeds and `config.out`, seed S writes to out/seed{S}/ and out/metrics.json
    summarises the runs (final loss and accuracy per seed, mean and std over seeds).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LinearCNNInputError("--seeds is empty; expected a comma-separated list such as 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise LinearCNNInputError(f"--seeds {','.join(map(str, seeds))} repeats a seed; expected distinct seeds")
    if len(seeds) == 1:  # together or not: one model
        return [train(dataclasses.replace(config, seed=seeds[0]), dataset=dataset, test_dataset=test_dataset, progress=progress)]
    configs = [
        dataclasses.replace(config, seed=s, out=None if config.out is None else str(seed_out_dir(config.out, s))) for s in seeds
    ]
    if together:
        from linearcnn.train_together import check_together, train_together

        check_together([c.validate() for c in configs])
    for one in configs:  # every seed's inputs and output folder checked before the first trains
        _check_out_dir(one.validate(), int(os.environ.get("RANK", "0")) == 0)
    config.validate()
    if dataset is None:
        dataset = _load_dataset(config.resolved())
        if test_dataset is None:
            test_dataset = load_test_dataset(config.resolved())
    with _distributed(resolve_device(config.device)) as (dist_info, _):  # one process group for all seeds
        if together:
            results = train_together(configs, dataset=dataset, test_dataset=test_dataset, progress=progress)
        else:
            results = [train(one, dataset=dataset, test_dataset=test_dataset, progress=progress) for one in configs]
    if config.out is not None and dist_info.is_main:
        finals = [final_metrics(r) for r in results]
        summary = {
            "config": config.validate().resolved().to_dict(), "seeds": seeds, "versions": versions(),
            "runs": [{"seed": s, "out": f"seed{s}", **f} for s, f in zip(seeds, finals)],
            "loss_mean": float(np.mean([f["loss"] for f in finals])), "loss_std": float(np.std([f["loss"] for f in finals])),
            "accuracy_mean": float(np.mean([f["accuracy"] for f in finals])),
            "accuracy_std": float(np.std([f["accuracy"] for f in finals])),
        }
        atomic_write_text(Path(config.out) / METRICS_NAME, json.dumps(summary, indent=2) + "\n")
    return results


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; LinearCNNInputError for anything else."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise LinearCNNInputError(f"--seeds {text!r} is not valid; expected comma-separated integers such as 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise LinearCNNInputError(f"--seeds {text!r} is not valid; expected comma-separated non-negative integers such as 0,1,2")
    return seeds


def iter_first_layers(result: TrainResult) -> Iterator[tuple[int, torch.Tensor]]:
    """(step, first-layer weights) for every snapshot of a result, in step order."""
    for step, weights in zip(result.snapshot_steps.tolist(), result.snapshot_weights):
        yield int(step), weights


__all__ = [
    "ARCHS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "check_linear_lr",
    "checkpoint_dict",
    "draw_random_labels",
    "final_metrics",
    "linear_gd_hessian_max_eigenvalue",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "parity_targets",
    "parse_seeds",
    "prepare_training_data",
    "progress_enabled",
    "seed_out_dir",
    "train",
    "train_seeds",
    "versions",
]

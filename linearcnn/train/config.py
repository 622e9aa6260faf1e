"""What a training run is: `TrainConfig`, its choices, its validation and its resolved defaults.

Library errors name the parameters as spelled here (`lr`, `batch_size`) and carry them in
`LinearCNNInputError.parameter`; the CLI shows them under their flags (`--lr`, `--batch-size`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from linearcnn.errors import LinearCNNInputError
from linearcnn.first_layer_init import parse_first_layer_init
from linearcnn.models import DEFAULT_LINEAR_INIT_STD, DEFAULT_WIDTH, LINEAR_ARCHS, check_arch, default_kernel_size

LABEL_CHOICES = ("true", "random")
OPTIMIZER_CHOICES = ("sgd", "adam")
LOSS_CHOICES = ("auto", "mse", "cross-entropy")
PRECISION_CHOICES = ("auto", "float32", "float64", "bf16")
READOUT_CHOICES = ("fixed", "trainable")
SYNC_BN_CHOICES = ("auto", "on", "off")
DEFAULT_RANDOM_CLASSES = 10  # classes of a random-label draw on unlabelled data

# Fields that say how long / where / on what a run goes, not what it computes: they may differ
# between a checkpoint and the run that resumes it.
RUN_CONTROL_FIELDS = frozenset(
    {"epochs", "steps", "out", "resume", "overwrite", "device", "compile", "checkpoint_seconds", "test", "test_limit", "test_every",
     "until_train_acc", "until_loss", "max_epochs"}
)
# Fields that may differ between the models trained together (one vmapped stack).
PER_MODEL_FIELDS = ("seed", "label_seed", "out")


#: Torch and numpy generators take seeds below 2**63.
MAX_SEED = 2**63 - 1
#: Sizes beyond these are typos, not experiments: they would only exhaust memory.
SIZE_CEILINGS = {"width": 16_384, "kernel_size": 64, "num_classes": 100_000}

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
    `test_every` epochs (0: only at the end) and at the end, when the data has a labelled test
    split; `sync_bn` "auto" turns the BatchNorm layers into SyncBatchNorm under torchrun on CUDA
    (BatchNorm statistics over the global batch, as in one process), "on" demands it (an error on
    CPU, where torch has no SyncBatchNorm), "off" keeps per-process statistics.

    `compile` runs `torch.compile` on the model; it is off by default because on the 2-core CPU
    it trained no faster than the eager loop (VGG11-bn width 16 0.99-1.06x, width 64 0.90x, after a
    first compile of 17-56 s; `python benchmarks/bench_train.py --steps 12 --repeats 4`).

    `first_layer_init` (`linearcnn.first_layer_init`): "default", "whitening", "formula",
    "formula:TAU" or "frozen-whitening" (which also sets `freeze_first_layer` when resolved), built
    from the training data's patch statistics, or from `init_stats` (a `linearcnn stats` file).

    Stopping rules (`linearcnn.train.stopping`): `until_train_acc` A in (0, 1] stops the run at the
    first epoch end where that epoch's train accuracy is >= A, `until_loss` L > 0 at the first
    where its mean train loss is <= L (one of the two at most; not with `steps`); with a target,
    `max_epochs` (default: `epochs`) is the cap, and a run that hits it without reaching the
    target has not converged. `max_epochs` without a target is an error (use `epochs`).
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
    until_train_acc: float | None = None
    until_loss: float | None = None
    max_epochs: int | None = None
    first_layer_init: str = "default"
    init_stats: str | None = None

    def validate(self) -> TrainConfig:
        """Raise LinearCNNInputError (one line) for a value no run could use; return self."""
        check_arch(self.arch)
        for name, choice, choices in (
            ("labels", self.labels, LABEL_CHOICES),
            ("optimizer", self.optimizer, OPTIMIZER_CHOICES),
            ("loss", self.loss, LOSS_CHOICES),
            ("precision", self.precision, PRECISION_CHOICES),
            ("readout", self.readout, READOUT_CHOICES),
            ("sync_bn", self.sync_bn, SYNC_BN_CHOICES),
        ):
            if choice not in choices:
                raise LinearCNNInputError(f"{name} {choice!r} is not valid; expected one of {', '.join(choices)}", parameter=name)
        optional_ints = (("steps", self.steps), ("width", self.width), ("kernel_size", self.kernel_size), ("limit", self.limit),
                         ("num_classes", self.num_classes), ("test_limit", self.test_limit), ("max_epochs", self.max_epochs))
        positive_ints = [("epochs", self.epochs), ("batch_size", self.batch_size)]
        positive_ints += [(n, v) for n, v in optional_ints if v is not None]
        for name, value in positive_ints:
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise LinearCNNInputError(f"{name} must be a positive integer, got {value}", parameter=name)
            if name in SIZE_CEILINGS and value > SIZE_CEILINGS[name]:
                raise LinearCNNInputError(f"{name} must be at most {SIZE_CEILINGS[name]:,}, got {value}", parameter=name)
        for name, seed in (("seed", self.seed), ("label_seed", self.label_seed)):
            if seed is not None and (isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= MAX_SEED):
                raise LinearCNNInputError(f"{name} must be an integer in [0, 2**63 - 1], got {seed}", parameter=name)
        _check(self.test_every >= 0, "test_every", f"must be >= 0 (0: only at the end), got {self.test_every}")
        _check(self.snapshot_every >= 0, "snapshot_every", f"must be >= 0 (0: no snapshots), got {self.snapshot_every}")
        _check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a positive number, got {self.lr}")
        _check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
               f"must be a finite number >= 0, got {self.weight_decay}")
        _check(math.isfinite(self.init_std) and self.init_std > 0, "init_std", f"must be a positive number, got {self.init_std}")
        self._validate_stopping()
        init = parse_first_layer_init(self.first_layer_init)
        if self.init_stats is not None and init.name == "default":
            raise LinearCNNInputError("init_stats is read by a whitening or formula first_layer_init; "
                                      "with the default one it would be ignored", parameter="init_stats")
        if self.arch == "linear" and self.loss == "cross-entropy":
            raise LinearCNNInputError(
                "loss cross-entropy needs class outputs; arch linear has one scalar output (use mse)", parameter="loss"
            )
        frozen = self.freeze_first_layer or init.frozen
        if frozen and (self.arch == "linear" or (self.arch == "linear-multi" and self.readout == "fixed")):
            raise LinearCNNInputError(
                f"{'freeze_first_layer' if self.freeze_first_layer else 'first_layer_init frozen-whitening'} "
                f"with arch {self.arch} leaves nothing to train"
                + (" (use readout trainable)" if self.arch == "linear-multi" else ""),
                parameter="freeze_first_layer" if self.freeze_first_layer else "first_layer_init",
            )
        return self

    def _validate_stopping(self) -> None:
        """The stopping rule's values and how they combine (class docstring)."""
        acc, loss = self.until_train_acc, self.until_loss
        if acc is not None:
            _check(not isinstance(acc, bool) and math.isfinite(acc) and 0 < acc <= 1, "until_train_acc", f"must be in (0, 1], got {acc}")
        if loss is not None:
            _check(not isinstance(loss, bool) and math.isfinite(loss) and loss > 0, "until_loss", f"must be a positive number, got {loss}")
        _check(acc is None or loss is None, "until_loss", "and until_train_acc are two stopping rules; give one of them")
        target = "until_train_acc" if acc is not None else "until_loss" if loss is not None else None
        if target is not None and self.steps is not None:
            raise LinearCNNInputError(f"steps does not combine with {target}; bound the run with max_epochs", parameter="steps")
        if target is None and self.max_epochs is not None:
            raise LinearCNNInputError(
                "max_epochs is the cap of a run with a target (until_train_acc or until_loss); without one, use epochs",
                parameter="max_epochs",
            )

    def resolved(self) -> TrainConfig:
        """A copy with the architecture defaults filled in (width, kernel_size, loss, label_seed)."""
        return dataclasses.replace(
            self,
            width=DEFAULT_WIDTH[self.arch] if self.width is None else int(self.width),
            kernel_size=default_kernel_size(self.arch) if self.kernel_size is None else int(self.kernel_size),
            loss=("mse" if self.arch in LINEAR_ARCHS else "cross-entropy") if self.loss == "auto" else self.loss,
            label_seed=self.seed if self.label_seed is None else self.label_seed,
            first_layer_init=str(parse_first_layer_init(self.first_layer_init)),
            freeze_first_layer=self.freeze_first_layer or parse_first_layer_init(self.first_layer_init).frozen,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _check(ok: bool, parameter: str, problem: str) -> None:
    if not ok:
        raise LinearCNNInputError(f"{parameter} {problem}", parameter=parameter)


def check_together(configs: Sequence[TrainConfig]) -> None:
    """LinearCNNInputError unless these configs can train together (same settings but the seed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LinearCNNInputError(
            "together does not run under torchrun; drop together (the seeds then train one after another, each with DDP)",
            parameter="together",
        )
    first = configs[0]
    if first.compile:
        raise LinearCNNInputError("together does not combine with compile; drop one of them", parameter="compile")
    reference = {k: v for k, v in dataclasses.asdict(first).items() if k not in PER_MODEL_FIELDS}
    for config in configs[1:]:
        other = {k: v for k, v in dataclasses.asdict(config).items() if k not in PER_MODEL_FIELDS}
        if other != reference:
            differing = sorted(k for k in reference if reference[k] != other[k])
            raise LinearCNNInputError(f"together: the runs differ in {', '.join(differing)}; only the seed may differ",
                                      parameter="together")


#: On the CPU, VGG11 wider than this trains faster in the default layout (channels_last / contiguous,
#: one SGD step: width 16 1.24x, 32 1.07x, 64 0.93x; ResNet20 1.34x, 1.34x, 1.22x at widths 16, 32, 64).
CPU_CHANNELS_LAST_MAX_VGG_WIDTH = 32


def channels_last_for(config: TrainConfig, device: torch.device) -> bool:
    """Whether one model (not a vmapped stack) trains in channels_last: the deep nets on CUDA, and on
    the CPU where it measured faster. Measured on the 2-core CPU, quiet (one SGD step, batch 256,
    float32, 2 threads; ratio of the medians of 3 alternating runs, `python
    benchmarks/bench_memory_format.py`, in benchmarks/results/memory_format.json): every ResNet20
    width (1.22-1.34x), VGG11-bn up to width `CPU_CHANNELS_LAST_MAX_VGG_WIDTH` (1.07-1.24x; 0.93x at
    width 64). ResNet18 on the CPU follows ResNet20 (not measured apart)."""
    if config.arch in LINEAR_ARCHS or device.type not in ("cuda", "cpu"):
        return False
    width = DEFAULT_WIDTH[config.arch] if config.width is None else int(config.width)
    return device.type == "cuda" or not (config.arch.startswith("vgg") and width > CPU_CHANNELS_LAST_MAX_VGG_WIDTH)


def precision_for(config: TrainConfig, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter/data dtype, autocast dtype or None) of a run on `device`."""
    if config.precision == "float64":
        return torch.float64, None
    if config.precision == "bf16":
        return torch.float32, torch.bfloat16
    if config.precision == "auto" and device.type == "cuda" and config.arch not in LINEAR_ARCHS:
        return torch.float32, torch.bfloat16
    return torch.float32, None


__all__ = [
    "CPU_CHANNELS_LAST_MAX_VGG_WIDTH",
    "DEFAULT_RANDOM_CLASSES",
    "LABEL_CHOICES",
    "LOSS_CHOICES",
    "OPTIMIZER_CHOICES",
    "PER_MODEL_FIELDS",
    "PRECISION_CHOICES",
    "READOUT_CHOICES",
    "RUN_CONTROL_FIELDS",
    "SYNC_BN_CHOICES",
    "TrainConfig",
    "check_together",
    "precision_for",
]

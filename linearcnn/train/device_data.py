"""The data as the loop sees it: normalised once, resident on the training device, with targets.

`prepare_training_data` normalises the training set per channel (`dataset.normalized()`), checks
it against the configuration and builds the targets (`linearcnn.train.targets`);
`prepare_test_data` normalises the test split with the training statistics. One host->device
copy each; nothing moves back during training. `epoch_order` is the data order of one epoch,
drawn from (seed, epoch) alone so an interrupted run resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from linearcnn.errors import LinearCNNInputError
from linearcnn.train.config import TrainConfig
from linearcnn.train.targets import num_classes_for, parity_targets, training_targets

if TYPE_CHECKING:
    from linearcnn.data import ImageDataset


@dataclass
class TrainingData:
    """The training set as the loop sees it: normalised, resident on the device, with targets."""

    images: torch.Tensor  # (N, C, H, W) normalised per channel, on the device
    targets: torch.Tensor  # (N,) float +-1 for `linear`, int64 class indices otherwise, on the device
    num_classes: int  # classes of the labels (2 for `linear`: the parity classes)
    random_labels: torch.Tensor | None  # (N,) int64 draw on the CPU, None for true labels
    info: dict[str, Any]  # spec, sizes, classes, channel mean/std: stored in the checkpoint


@dataclass
class HeldOutData:
    """The test split as the evaluation sees it: normalised with the training set's statistics."""

    images: torch.Tensor  # (M, C, H, W) on the device
    targets: torch.Tensor  # (M,) like TrainingData.targets, from the test split's true labels
    info: dict[str, Any]  # spec, description, num_images: stored in the checkpoint


def load_training_dataset(config: TrainConfig) -> ImageDataset:
    """The training images of `config.data` (its first `config.limit`)."""
    from linearcnn.data import load_dataset  # imported here: data loading is only needed for a run

    return load_dataset(config.data, limit=config.limit)


def load_test_dataset(config: TrainConfig) -> ImageDataset | None:
    """The test split of `config.data` (its first `config.test_limit` images), or None without one."""
    from linearcnn.data import has_test_split, load_dataset

    if not config.test or not has_test_split(config.data):
        return None
    return load_dataset(config.data, train=False, limit=config.test_limit)


def prepare_training_data(config: TrainConfig, dataset: ImageDataset, device: torch.device, dtype: torch.dtype) -> TrainingData:
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
        raise LinearCNNInputError(f"kernel_size {k} is larger than the images ({h}x{w}) of data {dataset.spec!r}", parameter="kernel_size")
    if config.labels == "true" and dataset.labels is None:
        raise LinearCNNInputError(f"labels true: data {dataset.spec!r} has no labels; use labels random", parameter="labels")
    num_classes = num_classes_for(config, dataset)
    targets, random_labels = training_targets(config, dataset.labels, n, num_classes, dtype)
    mean, std = dataset.normalization_stats()
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


def prepare_test_data(
    config: TrainConfig, test_dataset: ImageDataset | None, data: TrainingData, device: torch.device, dtype: torch.dtype
) -> HeldOutData | None:
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
            f"test split of data {spec!r} has images of shape {images_np.shape}; expected (M, {', '.join(map(str, expected))}) "
            "like the training images"
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


def epoch_order(seed: int, epoch: int, num_images: int) -> torch.Tensor:
    """The data order of one epoch: a permutation drawn from (seed, epoch) alone. (N,) int64 CPU.

    >>> bool(torch.equal(epoch_order(3, 1, 10), epoch_order(3, 1, 10)))
    True
    """
    state = np.random.SeedSequence([int(seed), int(epoch), 0x5EED]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(num_images, generator=generator)


__all__ = [
    "HeldOutData",
    "TrainingData",
    "epoch_order",
    "load_test_dataset",
    "load_training_dataset",
    "prepare_test_data",
    "prepare_training_data",
]

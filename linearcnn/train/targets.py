"""Labels and regression targets: true labels, seeded random labels, the linear model's +-1 parity.

Classifiers (every arch but `linear`) use class indices: the true labels, or with
`labels="random"` a seeded uniform draw `draw_random_labels(N, num_classes, label_seed)`,
uncorrelated with the images and stored in the checkpoint. The scalar `linear` model regresses on
y = +1 for an even class index and -1 for an odd one (`parity_targets`): for a two-class set this
is +-1 by class, for random labels the draw has two classes, so y is a seeded Rademacher draw
(PAPER.md section 2, assumption (b)).

>>> parity_targets(torch.tensor([0, 1, 2, 3])).tolist()
[1.0, -1.0, 1.0, -1.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from linearcnn.errors import LinearCNNInputError
from linearcnn.train.config import DEFAULT_RANDOM_CLASSES, TrainConfig

if TYPE_CHECKING:
    from linearcnn.data import ImageDataset


def draw_random_labels(num_images: int, num_classes: int, seed: int) -> torch.Tensor:
    """Random labels: `torch.randint(num_classes, (N,))` from a CPU generator seeded with `seed`. (N,) int64."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, int(num_classes), (int(num_images),), generator=generator)


def parity_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets of the scalar linear model: +1 for an even class index, -1 for an odd one. (N,) float32."""
    return 1.0 - 2.0 * (labels % 2).to(torch.float32)


def num_classes_for(config: TrainConfig, dataset: ImageDataset) -> int:
    """Classes of the run's labels: 2 for `linear`, `num_classes` when given, else the data's (10 for random labels on unlabelled data)."""
    labels = dataset.labels
    if config.arch == "linear":
        return 2
    if config.num_classes is not None:
        if labels is not None and config.labels == "true" and len(labels) and int(np.max(labels)) >= config.num_classes:
            raise LinearCNNInputError(
                f"num_classes {config.num_classes} is too small for data {dataset.spec!r}: it has label {int(np.max(labels))}",
                parameter="num_classes",
            )
        return int(config.num_classes)
    if config.labels == "random" and labels is None:
        return DEFAULT_RANDOM_CLASSES
    if dataset.classes:
        return len(dataset.classes)
    return int(np.max(labels)) + 1  # type: ignore[arg-type]


def training_targets(
    config: TrainConfig, true_labels: np.ndarray | None, num_images: int, num_classes: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(targets (N,) on the CPU, the random-label draw (N,) or None) for a resolved config.

    Random labels are `draw_random_labels(N, num_classes, config.label_seed)`; `linear` regresses
    on their (or the true labels') parity, the classifiers on the class indices.
    """
    random_labels = draw_random_labels(num_images, num_classes, int(config.label_seed)) if config.labels == "random" else None  # type: ignore[arg-type]
    labels = random_labels if random_labels is not None else torch.as_tensor(np.asarray(true_labels), dtype=torch.int64)
    if config.arch == "linear":
        return parity_targets(labels).to(dtype), random_labels  # (N,) +-1
    return labels, random_labels  # (N,) class indices


__all__ = ["draw_random_labels", "num_classes_for", "parity_targets", "training_targets"]

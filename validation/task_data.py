"""The derived training tasks of the suite, built from one data set's images (PAPER.md section 4).

* **class pairs** (`class_pair`): the images of two classes only, labelled 0 and 1: the paper's
  "binary CIFAR class pairs", on our data.
* **PCA-component labels** (`pca_component_labels`): a two-class label that is a function of the
  image itself: 1 when the image's energy along one patch-PCA component is above the training
  median, else 0. Such labels are correlated with the patches' PCA coefficients on purpose, which
  breaks assumption (b) of the theory (PAPER.md section 2); the paper reports that the
  true-vs-random similarity then falls to about 0.

* **larger crops** ("crop-C-kK"): the built-in photos as C x C crops (`builtin:N@C`), for a
  network with a K x K first layer (ResNet18's 7x7 stem: 147 components for RGB).

A task is named by a string (`Arm.task`): "pair-A-B" (class indices A and B of the data set),
"pca-K" (component K, 0 = largest eigenvalue) or "crop-C-kK". `task_datasets` builds the training and test sets of
a task; they are ordinary `ImageDataset`s, trained by the one training loop like any other data.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from linearcnn.data import ImageDataset
from linearcnn.errors import LinearCNNInputError

_TASK = re.compile(r"^(?:pair-(\d+)-(\d+)|pca-(\d+)|crop-(\d+)-k(\d+))$")


def pair_task(a: int, b: int) -> str:
    return f"pair-{int(a)}-{int(b)}"


def pca_task(component: int) -> str:
    return f"pca-{int(component)}"


def crop_task(crop: int, kernel: int) -> str:
    return f"crop-{int(crop)}-k{int(kernel)}"


def parse_task(task: str) -> tuple[str, tuple[int, ...]]:
    """("pair", (a, b)), ("pca", (k,)) or ("crop", (crop side, kernel)); LinearCNNInputError for anything else."""
    match = _TASK.match(task)
    if match is None:
        raise LinearCNNInputError(f"task {task!r} is not known; expected 'pair-A-B', 'pca-K' or 'crop-C-kK'",
                                  parameter="task")
    if match.group(3) is not None:
        return "pca", (int(match.group(3)),)
    if match.group(4) is not None:
        return "crop", (int(match.group(4)), int(match.group(5)))
    a, b = int(match.group(1)), int(match.group(2))
    if a == b:
        raise LinearCNNInputError(f"task {task!r} pairs a class with itself; expected two different classes", parameter="task")
    return "pair", (a, b)


def class_pair(dataset: ImageDataset, a: int, b: int, limit: int | None) -> ImageDataset:
    """The first `limit` images of classes `a` and `b` (in the data set's order), labelled 0 (a) and 1 (b)."""
    if dataset.labels is None:
        raise LinearCNNInputError(f"data {dataset.spec!r} has no labels; class pairs need them", parameter="data")
    for c in (a, b):
        if not 0 <= c < dataset.num_classes:
            raise LinearCNNInputError(f"class pair ({a}, {b}): data {dataset.spec!r} has classes 0..{dataset.num_classes - 1}",
                                      parameter="binary_pairs")
    keep = np.flatnonzero((dataset.labels == a) | (dataset.labels == b))[:limit]  # (n,)
    labels = (dataset.labels[keep] == b).astype(np.int64)  # (n,) 0 for a, 1 for b
    names = [dataset.classes[a], dataset.classes[b]]
    return ImageDataset(dataset.images[keep], labels, names, f"{dataset.spec} classes {a},{b}",
                        f"{dataset.description} Classes {a} ({names[0]}) and {b} ({names[1]}) only, labelled 0 and 1.")


def component_energy(normalized: np.ndarray, eigenvector: np.ndarray, kernel_size: int) -> np.ndarray:
    """Each image's mean squared projection of its (stride-1, unpadded) patches on one patch-PCA
    eigenvector: (N,) float64. normalized (N, C, H, W); eigenvector (C*k*k,) in the patch layout of
    `linearcnn.patches` (channel, row, column)."""
    x = torch.as_tensor(normalized, dtype=torch.float64)  # (N, C, H, W)
    w = torch.as_tensor(eigenvector, dtype=torch.float64).reshape(1, x.shape[1], kernel_size, kernel_size)  # (1, C, k, k)
    return F.conv2d(x, w).pow(2).mean(dim=(1, 2, 3)).numpy()  # (N,)


def pca_component_labels(train: ImageDataset, test: ImageDataset | None, stats: Any, component: int
                         ) -> tuple[ImageDataset, ImageDataset | None, dict[str, Any]]:
    """Train and test sets relabelled by the energy along patch-PCA component `component` of the
    training images (`stats`: their patch statistics, of the normalised images): label 1 above the
    training median, else 0. Both sets are normalised with the training set's channel statistics
    before the energy is taken. Returns (train, test, {"component", "eigenvalue", "threshold", "balance"})."""
    d = stats.eigenvectors.shape[1]
    if not 0 <= component < d:
        raise LinearCNNInputError(f"PCA component {component}: the patch statistics have components 0..{d - 1}",
                                  parameter="pca_label_component")
    mean, std = train.normalization_stats()
    u = stats.eigenvectors[:, component]  # (d,)
    energy = component_energy(train.normalized(mean, std), u, stats.kernel_size)  # (N,)
    threshold = float(np.median(energy))
    names = [f"component {component} energy <= median", f"component {component} energy > median"]

    def relabel(dataset: ImageDataset, e: np.ndarray) -> ImageDataset:
        return ImageDataset(dataset.images, (e > threshold).astype(np.int64), names, f"{dataset.spec} pca-{component} labels",
                            f"{dataset.description} Labelled by the energy along patch-PCA component {component} "
                            f"(1 above the training median {threshold:.4g}).")

    test_set = None
    if test is not None:
        test_set = relabel(test, component_energy(test.normalized(mean, std), u, stats.kernel_size))
    info = {"component": int(component), "eigenvalue": float(stats.eigenvalues[component]), "threshold": threshold,
            "balance": float(np.mean(energy > threshold))}
    return relabel(train, energy), test_set, info


__all__ = ["class_pair", "component_energy", "pair_task", "parse_task", "pca_component_labels", "pca_task"]

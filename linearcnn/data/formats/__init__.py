"""Loaders for the on-disk formats, one module each: `cifar` (CIFAR-10/100 pickles), `svhn` (.mat),
`mnist` (MNIST-like IDX), `folder` (a folder of images per class) and `npz` (.npz arrays); the
shared path checks and result type live in `_common`.

Each loader returns `(images, labels, classes, description)` with images float32 (N, C, H, W) in
[0, 1] (see `to_unit_float`), labels int64 (N,) or None, and reads only what the split and the
`limit` (first N images) need where the format allows it. Every way a file can be missing,
misplaced, malformed or inconsistent ends in a one-line `LinearCNNInputError`, and so does asking
for a test split the data does not have (never a silent fallback to the training images).
`has_test_files` says whether a spec's test split is there, listing files and npz keys only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from linearcnn.data.formats import cifar, folder, mnist, npz, svhn
from linearcnn.data.formats._common import Loaded
from linearcnn.data.formats.cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100
from linearcnn.data.formats.folder import IMAGE_SUFFIXES, load_folder
from linearcnn.data.formats.mnist import load_mnist, read_idx
from linearcnn.data.formats.npz import load_npz
from linearcnn.data.formats.svhn import load_svhn
from linearcnn.errors import LinearCNNInputError

#: The loader of each data kind (all but `builtin`): `loader(path, train=..., limit=...)`.
LOADERS: dict[str, Callable[..., Loaded]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "mnist": load_mnist,
    "folder": load_folder,
    "npz": load_npz,
}

_TEST_SPLIT: dict[str, Callable[[Path], bool]] = {
    "cifar10": lambda path: cifar.has_test_split(path, "cifar10"),
    "cifar100": lambda path: cifar.has_test_split(path, "cifar100"),
    "svhn": svhn.has_test_split,
    "mnist": mnist.has_test_split,
    "folder": folder.has_test_split,
    "npz": npz.has_test_split,
}


def has_test_files(kind: str, path: Path) -> bool:
    """Whether the data set `kind` at `path` (not builtin) has its test split on disk.

    Only names are looked at (files, sub-folders, an npz file's array list), nothing is parsed,
    so a True does not promise the files are well formed. A `path` that is missing or of the
    wrong type (a file where a folder is expected, or the reverse), or an npz file that is not a
    zip archive, raises the LinearCNNInputError the loader would raise.
    """
    if kind not in _TEST_SPLIT:
        raise LinearCNNInputError(f"data kind {kind!r}: expected one of {', '.join(_TEST_SPLIT)}")
    return _TEST_SPLIT[kind](path)


__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_SUFFIXES",
    "LOADERS",
    "Loaded",
    "has_test_files",
    "load_cifar10",
    "load_cifar100",
    "load_folder",
    "load_mnist",
    "load_npz",
    "load_svhn",
    "read_idx",
]

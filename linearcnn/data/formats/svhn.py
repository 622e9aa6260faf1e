"""SVHN cropped digits (`svhn:DIR`): train_32x32.mat and test_32x32.mat, label 10 read as digit 0.

The files are MATLAB v5 files, read by our own bounded parser (`_mat5.read_mat5`: sizes checked
before allocation, decompression capped, no scipy, which crashed on a damaged file). All of X is
read (at most MAX_DATA_VALUES values); `--limit` then keeps the first images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import MAX_DATA_VALUES, Loaded, check_dir, find_folder, limited
from linearcnn.data.formats._mat5 import read_mat5
from linearcnn.errors import LinearCNNInputError

_SVHN_EXPECTED = "train_32x32.mat and test_32x32.mat"


def load_svhn(root: Path, *, train: bool, limit: int | None) -> Loaded:
    name = "train_32x32.mat" if train else "test_32x32.mat"
    folder = find_folder(root, "svhn", [root], [name], _SVHN_EXPECTED)
    path = folder / name
    content = read_mat5(path, ["X", "y"], max_values=MAX_DATA_VALUES, where=f"svhn file {str(path)!r}")
    if "X" not in content or "y" not in content:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} has numeric variables {sorted(content)} of X and y; expected both"
        )
    pixels = np.asarray(content["X"])
    if pixels.ndim != 4 or pixels.shape[2] != 3:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: X has shape {pixels.shape}; expected (H, W, 3, N)"
        )
    if pixels.size > MAX_DATA_VALUES:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: X has {pixels.size:,} values; expected at most {MAX_DATA_VALUES:,}"
        )
    labels = np.asarray(content["y"]).reshape(-1)
    if labels.shape[0] != pixels.shape[3]:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: {labels.shape[0]} labels for {pixels.shape[3]} images; expected one per image"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: labels span [{labels.min()}, {labels.max()}]; expected 1..10"
        )
    count = limited(pixels.shape[3], limit)
    pixels = pixels[..., :count].transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    images = to_unit_float(pixels, "svhn")
    digits = np.where(labels[:count] == 10, 0, labels[:count])  # label 10 stands for the digit 0
    split = "train" if train else "test"
    return (
        np.ascontiguousarray(images),
        digits,
        [str(d) for d in range(10)],
        f"SVHN {split} split (cropped digits) from {folder}",
    )



def has_test_split(root: Path) -> bool:
    """Whether the SVHN folder `root` holds test_32x32.mat."""
    check_dir(root, "svhn", _SVHN_EXPECTED)
    return (root / "test_32x32.mat").is_file()


__all__ = ["has_test_split", "load_svhn"]

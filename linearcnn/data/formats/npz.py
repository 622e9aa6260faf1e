"""An `.npz` file of arrays (`npz:FILE`): `images` (or `train_images`), optional `labels`, `classes`
and a test split `test_images` / `test_labels`; never unpickled.

Read by `linearcnn._npz` with bounded memory: the members' headers are checked first, then only
the arrays needed are read, and of the images only the first `limit` (MAX_DATA_VALUES at most,
within the decompression-ratio rule); the rest of the images array is neither read nor checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from linearcnn._npz import npz_members, read_npz
from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import MAX_DATA_VALUES, Loaded, check_file, check_num_classes, limited
from linearcnn.errors import LinearCNNInputError


def _channel_axis(shape: tuple[int, ...]) -> str:
    """'NHWC' or 'NCHW' for a 4-d images array; last axis wins when both could be channels."""
    if shape[3] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    return ""


#: The two ways to name the train split's arrays (images, labels); `images` is the main one.
_NPZ_TRAIN_KEYS = (("images", "labels"), ("train_images", "train_labels"))
#: The test split's arrays (images, labels).
_NPZ_TEST_KEYS = ("test_images", "test_labels")
_NPZ_EXPECTED = (
    "an .npz file with an 'images' array (NxHxWxC or NxCxHxW), optional 'labels' and 'classes', "
    "and an optional test split 'test_images' / 'test_labels'"
)


def _npz_keys(path: Path) -> list[str]:
    """The array names of an npz file, from its zip directory (no array is read)."""
    check_file(path, "npz", _NPZ_EXPECTED)
    return list(npz_members(path, f"npz file {str(path)!r}"))


def _npz_split_keys(path: Path, keys: list[str], train: bool) -> tuple[str, str]:
    """The names of the split's (images, labels) arrays in an npz file with arrays `keys`."""
    if not train:
        if _NPZ_TEST_KEYS[0] not in keys:
            raise LinearCNNInputError(
                f"npz file {str(path)!r} has no test split; expected 'test_images' (and optional "
                f"'test_labels') next to 'images'"
            )
        return _NPZ_TEST_KEYS
    present = [pair for pair in _NPZ_TRAIN_KEYS if pair[0] in keys]
    if not present:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has arrays {keys}; expected 'images' (and optional 'labels')"
        )
    if len(present) > 1:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has both 'images' and 'train_images'; expected one of them"
        )
    images_key, labels_key = present[0]
    other_labels = "train_labels" if labels_key == "labels" else "labels"
    if other_labels in keys:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has {other_labels!r} beside {images_key!r}; expected "
            f"{labels_key!r} (labels are named like their images: 'labels' with 'images', "
            f"'train_labels' with 'train_images')"
        )
    return images_key, labels_key


def _npz_labels(labels: np.ndarray, path: Path, key: str, num_images: int | None) -> np.ndarray:
    """Checked int64 (N,) class indices from an npz labels array (length checked when
    `num_images` is given)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:  # (N, 1) or (1, N) column/row of labels
        labels = labels.reshape(-1)
    if labels.ndim != 1 or (num_images is not None and labels.shape[0] != num_images):
        expected = "(N,)" if num_images is None else f"({num_images},)"
        images = "" if num_images is None else f" for {num_images} images"
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} has shape {labels.shape}{images}; expected {expected}"
        )
    integral = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)
    whole_floats = (
        np.issubdtype(labels.dtype, np.floating)
        and bool(np.all(np.isfinite(labels)))
        and bool(np.all(labels == np.round(labels)))
    )
    if not (integral or whole_floats):
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} are {labels.dtype}; expected integer class indices"
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} contain {labels.min()}; expected class indices >= 0"
        )
    return labels


def load_npz(path: Path, *, train: bool, limit: int | None) -> Loaded:
    """The train split (`images`, or `train_images`) or the test split (`test_images`) of an npz
    file, with the split's labels and the file's `classes` (shared by both splits: without
    `classes` the names are "0".."M-1", M = 1 + the largest label of either split)."""
    keys = _npz_keys(path)
    images_key, labels_key = _npz_split_keys(path, keys, train)
    label_keys = [key for key in ("labels", "train_labels", "test_labels") if key in keys]
    where = f"npz file {str(path)!r}"
    shape = npz_members(path, where)[images_key].shape
    if len(shape) == 3:
        shape = (*shape, 1)  # (N, H, W) grayscale -> (N, H, W, 1)
    if len(shape) != 4:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {images_key!r} has shape {shape}; expected NxHxWxC, NxCxHxW or NxHxW"
        )
    layout = _channel_axis(shape)
    if not layout:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {images_key!r} has shape {shape}; expected 1 or 3 channels as the "
            f"last (NxHxWxC) or second (NxCxHxW) axis"
        )
    count = limited(shape[0], limit)
    wanted = [images_key, *label_keys, *(["classes"] if "classes" in keys else [])]
    arrays = read_npz(path, where, names=wanted, rows={images_key: count}, max_elements=MAX_DATA_VALUES)
    raw = arrays[images_key].reshape((count, *shape[1:]))  # the first `count` images
    all_labels = {key: arrays[key] for key in label_keys}  # labels are small
    names = arrays.get("classes")
    pixels = raw.transpose(0, 3, 1, 2) if layout == "NHWC" else raw  # (N, C, H, W)
    images = np.ascontiguousarray(to_unit_float(pixels, f"npz file {str(path)!r}"))
    checked = {  # every labels array of the file is checked, whichever split is read
        key: _npz_labels(value, path, key, shape[0] if key == labels_key else None)
        for key, value in all_labels.items()
    }
    classes: list[str] = []
    labels = checked[labels_key] if labels_key in checked else None
    if labels is not None:
        num_classes = check_num_classes(max((int(v.max()) + 1 for v in checked.values() if v.size), default=0), f"npz file {str(path)!r}")
        if names is not None:
            try:
                classes = [str(name) for name in np.asarray(names).reshape(-1)]
            except (SystemError, ValueError, UnicodeError):  # numpy rejects code points beyond Unicode
                raise LinearCNNInputError(f"npz file {str(path)!r}: 'classes' holds invalid text; expected class names") from None
            if len(classes) < num_classes:
                raise LinearCNNInputError(
                    f"npz file {str(path)!r}: {len(classes)} 'classes' names for labels up to {num_classes - 1}"
                )
        else:
            classes = [str(c) for c in range(num_classes)]
        labels = labels[:count]
    split = "" if _NPZ_TEST_KEYS[0] not in keys else ("train split, " if train else "test split, ")
    return images, labels, classes, f"npz file {path} ({split}{layout})"



def has_test_split(path: Path) -> bool:
    """Whether the npz file at `path` holds `test_images` (only its list of arrays is read)."""
    return _NPZ_TEST_KEYS[0] in _npz_keys(path)


__all__ = ["has_test_split", "load_npz"]

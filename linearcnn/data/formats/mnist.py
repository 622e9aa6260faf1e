"""MNIST-like IDX files (`mnist:DIR`): train-/t10k- images and labels, raw or gzip, in DIR or DIR/raw."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import Loaded, check_dir, check_num_classes, limited
from linearcnn.errors import LinearCNNInputError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, kind: str = "mnist") -> np.ndarray:
    """An IDX file (raw, or gzip when the name ends in .gz) as a native-endian numpy array."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()!r})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LinearCNNInputError(f"{kind} file {str(path)!r} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} holds {len(raw) - header} data bytes; its header {tuple(dims)} "
            f"needs {expected} (truncated or corrupt)"
        )
    array = np.frombuffer(
        raw, dtype=dtype, count=expected // dtype.itemsize, offset=header
    ).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem_variants: list[str]) -> Path | None:
    for stem in stem_variants:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


_MNIST_EXPECTED = "IDX files such as train-images-idx3-ubyte[.gz]"


def _mnist_stems(train: bool) -> tuple[list[str], list[str]]:
    """The accepted names (without .gz) of a split's image and label files."""
    prefix = "train" if train else "t10k"
    image_stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    label_stems = [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]
    return image_stems, label_stems


def _mnist_files(root: Path, train: bool) -> tuple[Path, Path] | None:
    """The split's (image, label) IDX files in DIR or DIR/raw, or None where either is missing."""
    image_stems, label_stems = _mnist_stems(train)
    for folder in (root, root / "raw"):
        if folder.is_dir():
            image_path, label_path = _idx_file(folder, image_stems), _idx_file(folder, label_stems)
            if image_path is not None and label_path is not None:
                return image_path, label_path
    return None


def load_mnist(root: Path, *, train: bool, limit: int | None) -> Loaded:
    check_dir(root, "mnist", _MNIST_EXPECTED)
    found = _mnist_files(root, train)
    if found is None:
        image_stems, label_stems = _mnist_stems(train)
        raise LinearCNNInputError(
            f"mnist folder {str(root)!r} lacks {image_stems[0]}[.gz] and {label_stems[0]}[.gz] "
            f"(looked in {str(root)!r} and {str(root / 'raw')!r})"
        )
    image_path, label_path = found
    pixels = read_idx(image_path)
    labels = read_idx(label_path)
    if pixels.ndim != 3:
        raise LinearCNNInputError(
            f"mnist file {str(image_path)!r} has shape {pixels.shape}; expected (N, H, W)"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LinearCNNInputError(
            f"mnist file {str(label_path)!r} has {labels.dtype} {labels.shape}; expected integer (N,)"
        )
    if labels.shape[0] != pixels.shape[0]:
        raise LinearCNNInputError(
            f"mnist files {image_path.name!r} and {label_path.name!r}: {labels.shape[0]} labels for "
            f"{pixels.shape[0]} images; expected one per image"
        )
    if labels.size and labels.min() < 0:
        raise LinearCNNInputError(f"mnist file {str(label_path)!r}: negative label {labels.min()}")
    num_classes = check_num_classes(max(10, int(labels.max()) + 1) if labels.size else 10, f"mnist file {str(label_path)!r}")
    count = limited(pixels.shape[0], limit)
    images = to_unit_float(pixels[:count, None], "mnist")  # (N, 1, H, W)
    split = "train" if train else "test"
    return (
        images,
        labels[:count].astype(np.int64),
        [str(c) for c in range(num_classes)],
        f"MNIST-like {split} split (IDX) from {image_path.parent}",
    )



def has_test_split(root: Path) -> bool:
    """Whether the folder `root` (or root/raw) holds the t10k image and label files."""
    check_dir(root, "mnist", _MNIST_EXPECTED)
    return _mnist_files(root, train=False) is not None


__all__ = ["has_test_split", "load_mnist", "read_idx"]

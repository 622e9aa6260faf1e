"""MNIST-like IDX files (`mnist:DIR`): train-/t10k- images and labels, raw or gzip, in DIR or DIR/raw.

Read as a stream with bounded memory: the header first, then only the records wanted (`--limit`
images; all labels), never more than MAX_DATA_VALUES values and, from a gzip file, never more
than `linearcnn._npz.check_inflation` allows for its size. Images beyond the limit are not read,
so damage there goes unnoticed; a file read to its end is checked to hold exactly what its header
declares (and, gzip, its CRC).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from linearcnn._npz import check_inflation
from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import MAX_DATA_VALUES, Loaded, check_dir, check_num_classes, limited
from linearcnn.errors import LinearCNNInputError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Bytes copied per read from the (decompressed) stream.
_CHUNK = 2**20


def _read_records(stream: IO[bytes] | gzip.GzipFile, path: Path, kind: str, rows: int | None) -> np.ndarray:
    """The IDX array behind `stream` (positioned at the file's start), or its first `rows` records."""
    where = f"{kind} file {str(path)!r}"
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
        raise LinearCNNInputError(f"{where} is not an IDX file (bad magic number {magic[:4].hex()!r})")
    ndim = magic[3]
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise LinearCNNInputError(f"{where} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_IDX_TYPES[magic[2]])
    header = 4 + 4 * ndim
    expected = math.prod(dims) * dtype.itemsize
    shape = dims if rows is None or not dims else (min(rows, dims[0]), *dims[1:])
    values = math.prod(shape)
    if values > MAX_DATA_VALUES:
        raise LinearCNNInputError(
            f"{where}: its header {tuple(dims)} asks to read {values:,} values; expected at most {MAX_DATA_VALUES:,} "
            "(--limit reads fewer images)"
        )
    size = path.stat().st_size
    if path.suffix != ".gz" and size - header != expected:  # raw: the file's size tells
        raise LinearCNNInputError(
            f"{where} holds {size - header} data bytes; its header {tuple(dims)} needs {expected} (truncated or corrupt)"
        )
    if path.suffix == ".gz":
        check_inflation(where, header + values * dtype.itemsize, size)
    array = np.empty(values, dtype=dtype)
    target = array.view(np.uint8).reshape(-1)
    done = 0
    while done < len(target):
        chunk = stream.read(min(_CHUNK, len(target) - done))
        if not chunk:
            break
        target[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    if done < len(target) or (shape == dims and stream.read(1)):  # a full read reaches the end (gzip: checks the CRC)
        held = done if done < len(target) else f"more than {expected}"
        raise LinearCNNInputError(
            f"{where} holds {held} data bytes; its header {tuple(dims)} needs {expected} (truncated or corrupt)"
        )
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path, kind: str = "mnist", rows: int | None = None) -> np.ndarray:
    """An IDX file (raw, or gzip when the name ends in .gz) as a native-endian numpy array, or
    only its first `rows` records (see the module docstring for the memory bounds)."""
    try:
        with open(path, "rb") as handle:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=handle) as stream:
                    return _read_records(stream, path, kind, rows)
            return _read_records(handle, path, kind, rows)
    except (OSError, EOFError, zlib.error) as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from None


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


def _declared_count(path: Path) -> int:
    """The number of records an IDX file's header declares (its first dimension)."""
    try:
        with open(path, "rb") as handle, (gzip.GzipFile(fileobj=handle) if path.suffix == ".gz" else handle) as stream:
            head = stream.read(8)
    except (OSError, EOFError, zlib.error) as exc:
        raise LinearCNNInputError(f"mnist file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})") from None
    return int(struct.unpack(">I", head[4:8])[0]) if len(head) == 8 else 0


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
    pixels = read_idx(image_path, rows=limit)  # only the images used are read
    labels = read_idx(label_path)
    if pixels.ndim != 3:
        raise LinearCNNInputError(
            f"mnist file {str(image_path)!r} has shape {pixels.shape}; expected (N, H, W)"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LinearCNNInputError(
            f"mnist file {str(label_path)!r} has {labels.dtype} {labels.shape}; expected integer (N,)"
        )
    declared = _declared_count(image_path)
    if labels.shape[0] != declared:
        raise LinearCNNInputError(
            f"mnist files {image_path.name!r} and {label_path.name!r}: {labels.shape[0]} labels for "
            f"{declared} images; expected one per image"
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

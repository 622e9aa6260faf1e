"""SVHN cropped digits (`svhn:DIR`): train_32x32.mat and test_32x32.mat, label 10 read as digit 0.

The files are MATLAB v5 files whose variables are zlib-compressed. Before scipy reads one,
`_check_mat_inflation` streams through every compressed variable (nothing kept) and refuses the
file once they decompress beyond `linearcnn._npz.check_inflation`'s bound for the file's size, so
a few-MB file of compressed zeros cannot make scipy allocate gigabytes. scipy reads all of X;
`--limit` then keeps the first images (X is at most the bound above, MAX_DATA_VALUES checked).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from linearcnn._npz import INFLATION_FLOOR, MAX_INFLATION, check_inflation
from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import MAX_DATA_VALUES, Loaded, check_dir, find_folder, limited
from linearcnn.errors import LinearCNNInputError

_SVHN_EXPECTED = "train_32x32.mat and test_32x32.mat"


#: MATLAB v5 data element type of a zlib-compressed variable.
_MI_COMPRESSED = 15
#: Bytes read (and decompressed at most) per step of the streaming check.
_CHUNK = 2**20


def _check_mat_inflation(path: Path) -> None:
    """LinearCNNInputError when the compressed variables of the v5 .mat file at `path` decompress
    beyond `check_inflation`'s bound (measured by streaming, stopping at the bound); files that are
    not v5 .mat files are left to scipy."""
    where = f"svhn file {str(path)!r}"
    size = path.stat().st_size
    bound = max(INFLATION_FLOOR, MAX_INFLATION * size)
    decompressed = compressed = 0
    with open(path, "rb") as handle:
        header = handle.read(128)
        order = {b"IM": "<", b"MI": ">"}.get(header[126:128])
        if len(header) < 128 or order is None:
            return
        while len(tag := handle.read(8)) == 8:
            kind, length = struct.unpack(f"{order}II", tag)
            if kind != _MI_COMPRESSED:
                handle.seek(length, 1)  # stored as is: no larger in memory than in the file
                continue
            compressed += length
            stream, left = zlib.decompressobj(), length
            while left and (chunk := handle.read(min(_CHUNK, left))):
                left -= len(chunk)
                while chunk:
                    try:
                        decompressed += len(stream.decompress(chunk, _CHUNK))
                    except zlib.error:
                        return  # scipy reports the damage
                    chunk = stream.unconsumed_tail
                    if decompressed > bound:
                        check_inflation(where, decompressed, compressed)
    check_inflation(where, decompressed, compressed)


def load_svhn(root: Path, *, train: bool, limit: int | None) -> Loaded:
    import scipy.io

    name = "train_32x32.mat" if train else "test_32x32.mat"
    folder = find_folder(root, "svhn", [root], [name], _SVHN_EXPECTED)
    path = folder / name
    _check_mat_inflation(path)
    try:
        content = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} cannot be read by scipy ({exc})"
        ) from None
    except Exception as exc:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} is not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from None
    if "X" not in content or "y" not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} has variables {found}; expected 'X' and 'y'"
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

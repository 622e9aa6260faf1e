"""What every format loader shares: the `Loaded` result, path checks whose errors name the
format, the path and what was expected there, the ceilings that keep a hostile file from taking
unbounded memory (`MAX_DATA_VALUES`, `MAX_PICTURE_PIXELS`), and `open_picture`, the one way an
image file is opened."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linearcnn._files import check_regular_file
from linearcnn.errors import LinearCNNInputError

#: Most pixel values one split may hold (2**28: 1 GiB as float32, the form every loader returns).
#: SVHN's train split (73,257 x 3,072 = 225M values), the largest set these loaders are for, fits;
#: a file declaring more is refused before anything is allocated (`--limit` reads fewer images).
MAX_DATA_VALUES = 2**28

#: Most pixels one picture file may have, checked from its header before it is decoded: 2**24
#: (16.8 Mpx, 4096x4096). A 12-Mpx phone photo (4032x3024) fits, and any data set's images are
#: shrunk to the folder's common (small) size anyway. Decoding a picture and shrinking it in
#: float32 costs about 25 bytes per pixel (430 MB measured for a 4096x4096 RGB PNG), so a few-KB
#: PNG declaring 95 Mpx of one colour is refused before it is decoded. Shrink larger photos first.
MAX_PICTURE_PIXELS = 2**24

#: (images float32 (N, C, H, W) in [0, 1], labels int64 (N,) or None, class names, description).
Loaded = tuple[NDArray[np.float32], "NDArray[np.int64] | None", list[str], str]


def check_dir(path: Path, kind: str, expected: str) -> None:
    if not path.exists():
        raise LinearCNNInputError(
            f"{kind} folder {str(path)!r} does not exist; expected {expected}"
        )
    if not path.is_dir():
        raise LinearCNNInputError(
            f"{kind} path {str(path)!r} is a file; expected a folder with {expected}"
        )


def check_file(path: Path, kind: str, expected: str) -> None:
    if not path.exists():
        raise LinearCNNInputError(f"{kind} file {str(path)!r} does not exist; expected {expected}")
    check_regular_file(path, f"{kind} path", expected)


def find_folder(
    root: Path, kind: str, candidates: list[Path], needed: list[str], expected: str
) -> Path:
    """The first of `candidates` that holds every file in `needed`; else name what is missing."""
    check_dir(root, kind, expected)
    best: tuple[int, Path, list[str]] | None = None
    for folder in candidates:
        if not folder.is_dir():
            continue
        for name in needed:
            if (folder / name).is_dir():
                raise LinearCNNInputError(
                    f"{kind} path {str(folder / name)!r} is a folder; expected a file"
                )
        missing = [name for name in needed if not (folder / name).is_file()]
        if not missing:
            return folder
        if best is None or len(missing) < len(best[2]):
            best = (len(missing), folder, missing)
    looked = " and ".join(repr(str(folder)) for folder in candidates)
    missing = best[2] if best is not None else needed
    raise LinearCNNInputError(
        f"{kind} folder {str(root)!r} lacks {', '.join(missing)} (looked in {looked})"
    )


@contextmanager
def open_picture(path: Path, what: str) -> Iterator[Any]:
    """The Pillow image at `path`, opened lazily (only its header read) and refused, with a one-line
    LinearCNNInputError naming `what`, beyond MAX_PICTURE_PIXELS, when Pillow reports a
    decompression bomb, or when it cannot be read (errors of the caller's block included)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                width, height = picture.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise LinearCNNInputError(
                        f"{what} is {width}x{height} ({width * height:,} pixels); expected at most "
                        f"{MAX_PICTURE_PIXELS:,} pixels (shrink larger pictures first)"
                    )
                yield picture
    except LinearCNNInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LinearCNNInputError(
            f"{what} is too large ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); expected at most "
            f"{MAX_PICTURE_PIXELS:,} pixels (shrink larger pictures first)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # how Pillow reports bad files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise LinearCNNInputError(f"{what} cannot be read ({type(exc).__name__}: {first})") from None
    except MemoryError:  # a damaged chunk length can make Pillow ask for gigabytes
        raise LinearCNNInputError(f"{what} declares more data than memory allows; truncated or corrupt?") from None


def limited(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)



__all__ = ["MAX_DATA_VALUES", "MAX_PICTURE_PIXELS", "Loaded", "check_dir", "check_file", "find_folder", "limited", "open_picture"]


#: More classes than any labelled image set we know (ImageNet-21k has 21,841); a label beyond
#: it is damage, not a class, and would cost one class name per possible index.
MAX_CLASSES = 100_000


def check_num_classes(num_classes: int, where: str) -> int:
    """`num_classes` (1 + the largest label), or a one-line LinearCNNInputError naming `where`
    when it exceeds MAX_CLASSES: labels are class indices, one class per index."""
    if num_classes > MAX_CLASSES:
        raise LinearCNNInputError(
            f"{where}: label {num_classes - 1} is not a class index; expected labels in [0, {MAX_CLASSES - 1}] "
            f"(at most {MAX_CLASSES:,} classes)"
        )
    return num_classes

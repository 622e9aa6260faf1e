"""What every format loader shares: the `Loaded` result, and path checks whose errors name the
format, the path and what was expected there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from linearcnn._files import check_regular_file
from linearcnn.errors import LinearCNNInputError

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


def limited(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)



__all__ = ["Loaded", "check_dir", "check_file", "find_folder", "limited"]


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

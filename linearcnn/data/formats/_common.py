"""What every format loader shares: the `Loaded` result, and path checks whose errors name the
format, the path and what was expected there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

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
    if path.is_dir():
        raise LinearCNNInputError(f"{kind} path {str(path)!r} is a folder; expected {expected}")


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

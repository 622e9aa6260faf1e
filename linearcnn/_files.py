"""Writing output files so that nothing is ever half-written, and checking output paths early."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from linearcnn.errors import LinearCNNInputError


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Fail early (before any computation) if `path` cannot be written as a file."""
    target = Path(path)
    if target.is_dir():
        raise LinearCNNInputError(f"{what} {str(target)!r} is a directory; expected a file path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise LinearCNNInputError(f"{what} {str(target)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise LinearCNNInputError(f"{what} {str(target)!r}: folder {str(parent)!r} is not writable")
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, save) -> Path:
    """Call `save(tmp_path)` (e.g. torch.save, fig.savefig, np.savez) then rename into place."""
    target = Path(path)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.stem}.", suffix=suffix)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target

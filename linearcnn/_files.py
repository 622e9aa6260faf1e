"""Writing output files so that nothing is ever half-written, and checking output paths early.

Every writer goes through `_write_beside`: a temporary file beside the target, renamed into place
when complete. When the file system refuses (disk full, quota, file too large, read-only, no
permission) the temporary file is removed and the error is one line naming the output
(`cannot write 'out.json': No space left on device ...`), a `LinearCNNInputError`, so the CLI
exits with code 2 without a traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

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


#: The figure formats `linearcnn.plots` writes, chosen by the file's suffix.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_outputs(outputs: Mapping[str, tuple[str | os.PathLike[str] | None, tuple[str, ...]]]) -> None:
    """Check a command's output paths before any work: `outputs` maps an option name (`--plot`) to
    (its path or None, the suffixes it may end in; empty: any). Each must be writable, end in an
    allowed suffix (what is written matches the name), and no two may name the same file."""
    seen: dict[str, str] = {}
    for option, (path, suffixes) in outputs.items():
        if path is None:
            continue
        target = check_writable_file(path, option)
        if suffixes and target.suffix.lower() not in suffixes:
            raise LinearCNNInputError(
                f"{option} {str(target)!r} has suffix {target.suffix or '(none)'!r}; expected a name ending in {' or '.join(suffixes)}"
            )
        key = os.path.realpath(target)
        if key in seen:
            raise LinearCNNInputError(f"{option} and {seen[key]} name the same file {str(target)!r}; expected two different paths")
        seen[key] = option


def check_regular_file(path: Path, what: str, expected: str) -> None:
    """Raise a one-line LinearCNNInputError unless `path` is an existing regular file (symlinks
    followed). A FIFO, a socket or a device is refused: reading one could block forever or
    never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise LinearCNNInputError(f"{what} {str(path)!r} does not exist; expected {expected}") from None
    except OSError as exc:
        raise LinearCNNInputError(f"{what} {str(path)!r} cannot be read ({exc.strerror or exc}); expected {expected}") from None
    if stat.S_ISDIR(mode):
        raise LinearCNNInputError(f"{what} {str(path)!r} is a folder; expected {expected}")
    if not stat.S_ISREG(mode):
        raise LinearCNNInputError(f"{what} {str(path)!r} is not a regular file (a FIFO, socket or device); expected {expected}")


def _new_file(folder: Path, prefix: str, suffix: str) -> str:
    """Create an empty file with a fresh random name in `folder`, with the mode `open()` gives a new
    file (0666 less the umask; `tempfile.mkstemp` would make it 0600, private to the user)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(path)
    raise FileExistsError(f"no free temporary name in {folder}")  # pragma: no cover


#: errno values meaning "the file system will not take this output", with what to do instead.
_REFUSALS: dict[int, str] = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EFBIG: "the file system or a size limit refuses a file this large; write elsewhere",
    errno.EROFS: "expected a writable folder",
    errno.EACCES: "expected a writable folder",
    errno.EPERM: "expected a writable folder",
}


def _cannot_write(target: Path, exc: OSError) -> LinearCNNInputError:
    """The one-line error for an output the file system refused (`exc.errno` in `_REFUSALS`)."""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    return LinearCNNInputError(f"cannot write {str(target)!r}: {reason}; nothing was written ({_REFUSALS[exc.errno or 0]})")


def is_write_refusal(exc: BaseException) -> bool:
    """Whether `exc` is the file system refusing a write (disk full, quota, too large, read-only, no permission)."""
    return isinstance(exc, OSError) and exc.errno in _REFUSALS


_refused = is_write_refusal


def write_refusal(target: str | os.PathLike, exc: OSError) -> LinearCNNInputError | None:
    """The one-line error for an OSError `exc` met while writing `target` when it is a refusal of
    the file system (disk full, quota, file too large, read-only, no permission); else None.
    For writers that cannot go through `_write_beside` (a lock file)."""
    return _cannot_write(Path(target), exc) if _refused(exc) else None


def _write_beside(target: Path, prefix: str, suffix: str, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` for a new temporary file beside `target`, then rename it into place;
    the temporary file is removed if anything fails. A refusal of the file system (disk full, read
    only, ...: `_REFUSALS`) becomes a one-line LinearCNNInputError naming `target`."""
    try:
        tmp = _new_file(target.parent if str(target.parent) else Path("."), prefix, suffix)
    except OSError as exc:
        if _refused(exc):
            raise _cannot_write(target, exc) from None
        raise
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _refused(exc):
            raise _cannot_write(target, exc) from None
        raise
    return target


class _RecordingWriter:
    """A binary file handle that remembers the first OSError of a write or flush. Writers that
    report a failed write their own way (torch.save: a RuntimeError about the stream position
    after swallowing the OSError) lose the reason; `atomic_write_stream` restores it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def atomic_write_stream(path: str | os.PathLike, write: Callable[[Any], object]) -> Path:
    """Call `write(handle)` with a binary handle (`write`, `flush`) on a temporary file beside
    `path`, flush it to disk, then rename it into place (e.g. `torch.save(obj, handle)`). A write
    the file system refused is reported as that refusal whatever the writer made of it."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            recorder = _RecordingWriter(handle)
            try:
                write(recorder)
                recorder.flush()
                os.fsync(handle.fileno())
            except Exception:
                if recorder.error is not None:
                    raise recorder.error from None
                raise

    target = Path(path)
    return _write_beside(target, f".{target.stem}.", "".join(target.suffixes) or ".tmp", save)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it into place."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    target = Path(path)
    # ".NAME.<random>.tmp": never matches a glob for the real files' suffix
    return _write_beside(target, f".{target.name}.", ".tmp", write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, save: Callable[[str], object]) -> Path:
    """Call `save(tmp_path)` (e.g. fig.savefig, np.savez) then rename into place. For torch.save use
    `atomic_write_stream`: given a path, torch reports a full disk as a RuntimeError without the reason."""
    target = Path(path)
    # the temporary name keeps the suffixes: savefig picks the format from it, np.savez would
    # otherwise append .npz
    return _write_beside(target, f".{target.stem}.", "".join(target.suffixes) or ".tmp", save)

"""An on-disk cache of patch statistics, so that `linearcnn fit | profile | compare | stats` pay for a
data set's patch PCA once.

Where: `$LINEARCNN_CACHE_DIR`, else `$XDG_CACHE_HOME/linearcnn`, else `~/.cache/linearcnn`, in a
`patch-stats/` folder; one `.npz` per key, written by `PatchStats.save` (atomic: a temporary
file renamed into place, so a reader never sees half a file).

Key: the SHA-256 of a JSON record of everything the statistics depend on: the data spec with its
path made absolute and a digest of the name, size and modification time of every file under it
(`data_fingerprint`: changing, adding or removing a data file gives a new key), the image limit,
kernel size, centring, normalisation, the reshaping options (image size, channels, padding) and
the versions of linearcnn, torch, numpy and Python. The caller builds the record
(`linearcnn.measurement`); this module hashes it, reads and writes.

A cache file that cannot be read, or that holds statistics of another shape, is ignored and
rewritten; a cache folder that cannot be written only costs the saving (a warning), never the
result.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linearcnn.records import versions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.patches.stats import PatchStats

#: The environment variable naming the cache folder.
CACHE_ENV = "LINEARCNN_CACHE_DIR"


def cache_root() -> Path:
    """The cache folder: `$LINEARCNN_CACHE_DIR`, `$XDG_CACHE_HOME/linearcnn` or `~/.cache/linearcnn`."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "linearcnn"


def data_fingerprint(spec: str) -> dict[str, Any]:
    """What identifies the data behind `spec`: for a file or folder, its absolute path and a digest
    of (relative name, size, mtime in ns) of every regular file under it; for builtin, the spec."""
    from linearcnn.data import parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.path is None:
        return {"kind": parsed.kind, "spec": parsed.text}
    root = parsed.path.resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    digest = hashlib.sha256()
    for path in files:
        status = path.stat()
        name = path.name if path == root else path.relative_to(root).as_posix()
        digest.update(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return {"kind": parsed.kind, "path": str(root), "files": len(files), "digest": digest.hexdigest()}


def cache_key(record: Mapping[str, Any]) -> str:
    """The file name stem for `record` (with the package versions added): a SHA-256 hex digest."""
    text = json.dumps({**record, "versions": versions()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_patch_stats(
    record: Mapping[str, Any], compute: Callable[[], PatchStats], *, channels: int | None, kernel: int,
    centered: bool, root: Path | None = None,
) -> tuple[PatchStats, bool]:
    """The statistics for `record` from the cache, or `compute()` saved there: (stats, read from the cache).

    A cached file is used only when it reads back and holds `channels` (None: any) x `kernel` x
    `kernel` statistics of the same centring; anything else is recomputed and overwritten.
    """
    from linearcnn.patches.stats import PatchStats

    folder = (cache_root() if root is None else root) / "patch-stats"
    path = folder / f"{cache_key(record)}.npz"
    if path.is_file():
        try:
            stats = PatchStats.load(path)
        except Exception:  # a damaged or foreign file: recompute and overwrite it
            stats = None
        if (stats is not None and stats.kernel_size == kernel and stats.centered == centered
                and (channels is None or stats.channels == channels)):
            return stats, True
    stats = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stats.save(path)
    except Exception as exc:  # the result stands without its cached copy
        warnings.warn(f"patch statistics not cached in {str(folder)!r} ({type(exc).__name__}: {exc}); "
                      f"set {CACHE_ENV} to a writable folder or pass --no-cache", stacklevel=2)
    return stats, False


__all__ = ["CACHE_ENV", "cache_key", "cache_root", "cached_patch_stats", "data_fingerprint"]

"""The patch-statistics file format: a `.npz` archive of float64 arrays and one JSON metadata
string, with no pickled objects, written atomically and checked field by field when read.

`PatchStats.save` and `PatchStats.load` (in `linearcnn.patches.stats`) call `write_stats_file` and
`read_stats_fields`; this module knows the fields by name only, so it imports nothing from there.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from linearcnn._files import atomic_save, check_writable_file
from linearcnn._npz import read_npz
from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.patches.stats import PatchStats

#: The `format` tag and version written into saved statistics.
STATS_FORMAT = "linearcnn-patch-stats"
STATS_FORMAT_VERSION = 1

_REQUIRED = ("meta", "eigenvalues", "eigenvectors", "second_moment", "mean")


def write_stats_file(stats: PatchStats, path: str | os.PathLike[str]) -> None:
    """Write `stats` to a `.npz` file at `path` (no pickled objects), atomically."""
    target = check_writable_file(path, "patch statistics file")
    meta = {
        "format": STATS_FORMAT,
        "format_version": STATS_FORMAT_VERSION,
        "num_patches": int(stats.num_patches),
        "channels": int(stats.channels),
        "kernel_size": int(stats.kernel_size),
        "centered": bool(stats.centered),
        "data_spec": str(stats.data_spec),
        "num_images": int(stats.num_images),
        "image_size": None if stats.image_size is None else [int(v) for v in stats.image_size],
        "extra": stats.extra,
    }
    arrays: dict[str, NDArray[Any]] = {
        "meta": np.array(json.dumps(meta)),
        "eigenvalues": np.asarray(stats.eigenvalues, dtype=np.float64),
        "eigenvectors": np.asarray(stats.eigenvectors, dtype=np.float64),
        "second_moment": np.asarray(stats.second_moment, dtype=np.float64),
        "mean": np.asarray(stats.mean, dtype=np.float64),
    }
    if stats.channel_mean is not None:
        arrays["channel_mean"] = np.asarray(stats.channel_mean, dtype=np.float64)
    if stats.channel_std is not None:
        arrays["channel_std"] = np.asarray(stats.channel_std, dtype=np.float64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz"
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as arrays of one dtype

    atomic_save(target, write)


def read_stats_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `PatchStats` fields stored at `path` by `write_stats_file`, every one checked
    (LinearCNNInputError naming the file and the field if anything is missing or wrong)."""
    where = f"patch statistics file {str(path)!r}"
    if not os.path.isfile(path):
        raise LinearCNNInputError(f"{where} does not exist or is not a file")
    return _fields_from_arrays(read_npz(path, where), where)  # every declared size checked before loading


def _fields_from_arrays(arrays: dict[str, NDArray[Any]], where: str) -> dict[str, Any]:
    """Validate the arrays of a saved file and return the PatchStats fields they hold."""
    missing = [name for name in _REQUIRED if name not in arrays]
    if missing:
        raise LinearCNNInputError(f"{where} lacks {', '.join(missing)}; expected a file written by PatchStats.save")
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (ValueError, TypeError, IndexError):
        raise LinearCNNInputError(f"{where} has unreadable metadata; expected a file written by PatchStats.save") from None
    if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise LinearCNNInputError(f"{where} has format {found!r}; expected {STATS_FORMAT!r}")
    if meta.get("format_version") != STATS_FORMAT_VERSION:
        raise LinearCNNInputError(
            f"{where} has format version {meta.get('format_version')!r}; expected {STATS_FORMAT_VERSION}"
        )
    ints = {}
    for key in ("num_patches", "channels", "kernel_size"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LinearCNNInputError(f"{where}: {key} is {value!r}; expected a positive integer")
        ints[key] = value
    if not isinstance(meta.get("centered"), bool):
        raise LinearCNNInputError(f"{where}: centered is {meta.get('centered')!r}; expected true or false")
    d = ints["channels"] * ints["kernel_size"] ** 2
    expected_shapes = {"eigenvalues": (d,), "eigenvectors": (d, d), "second_moment": (d, d), "mean": (d,)}
    checked = {name: _checked_array(arrays[name], shape, name, where) for name, shape in expected_shapes.items()}
    optional = {
        name: _checked_array(arrays[name], (ints["channels"],), name, where) if name in arrays else None
        for name in ("channel_mean", "channel_std")
    }
    if np.any(checked["eigenvalues"] < 0) or np.any(np.diff(checked["eigenvalues"]) > 0):
        raise LinearCNNInputError(f"{where}: eigenvalues are not non-negative and descending")
    image_size = meta.get("image_size")
    if image_size is not None:
        if not (isinstance(image_size, list) and len(image_size) == 2 and all(isinstance(v, int) for v in image_size)):
            raise LinearCNNInputError(f"{where}: image_size is {image_size!r}; expected [height, width]")
        image_size = (image_size[0], image_size[1])
    num_images = meta.get("num_images", 0)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise LinearCNNInputError(f"{where}: num_images is {num_images!r}; expected a non-negative integer")
    extra = meta.get("extra", {})
    return {
        "eigenvalues": checked["eigenvalues"],
        "eigenvectors": checked["eigenvectors"],
        "second_moment": checked["second_moment"],
        "mean": checked["mean"],
        "num_patches": ints["num_patches"],
        "channels": ints["channels"],
        "kernel_size": ints["kernel_size"],
        "centered": meta["centered"],
        "channel_mean": optional["channel_mean"],
        "channel_std": optional["channel_std"],
        "data_spec": str(meta.get("data_spec", "")),
        "num_images": num_images,
        "image_size": image_size,
        "extra": extra if isinstance(extra, dict) else {},
    }


def _checked_array(array: NDArray[Any], shape: tuple[int, ...], name: str, where: str) -> NDArray[np.float64]:
    if array.dtype.kind not in "fiu":
        raise LinearCNNInputError(f"{where}: {name} has dtype {array.dtype}; expected float64")
    if array.shape != shape:
        raise LinearCNNInputError(f"{where}: {name} has shape {array.shape}; expected {shape}")
    out = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise LinearCNNInputError(f"{where}: {name} contains NaN or Inf")
    return out


__all__ = ["STATS_FORMAT", "STATS_FORMAT_VERSION", "read_stats_fields", "write_stats_file"]

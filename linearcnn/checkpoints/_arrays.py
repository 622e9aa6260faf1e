"""Files of plain named arrays: `.npy`, `.npz` and safetensors. None of them can run code: NumPy
is called with `allow_pickle=False` and safetensors holds no code by design.

Memory stays bounded by what is used: a `.npy` header must agree with the file's size before the
array is loaded, and a `.npz` is listed from its members' headers alone (`linearcnn._npz`), each
array read only when fetched, within `MAX_ELEMENTS` values and the decompression-ratio rule."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from linearcnn._npz import MAX_ELEMENTS, npz_members, read_npz
from linearcnn.checkpoints._inventory import (
    Inventory,
    as_float64,
    natural_key,
    single_array_inventory,
    tensor_candidates,
)
from linearcnn.errors import LinearCNNInputError

#: `.npz` entries holding the initial weights of the chosen layer (not candidates themselves).
NPZ_INIT_KEYS: tuple[str, ...] = ("initial_weight", "init_weight")


def _numpy_error(path: Path, exc: Exception) -> LinearCNNInputError:
    if "allow_pickle" in str(exc):
        return LinearCNNInputError(
            f"checkpoint {str(path)!r} holds pickled object arrays, which are refused (loading them could "
            "run code); expected numeric arrays"
        )
    return LinearCNNInputError(
        f"checkpoint {str(path)!r}: cannot read NumPy data, truncated or corrupt? {type(exc).__name__}: {exc}"
    )


def _const(array: np.ndarray) -> Callable[[], np.ndarray]:
    """A zero-argument reader of a copy of `array` as float64."""
    return lambda: np.array(array, dtype=np.float64)


def _check_npy_size(path: Path) -> None:
    """Refuse a `.npy` whose header declares more data than the file holds, before numpy allocates it."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            return  # numpy reports other versions itself
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        if dtype.hasobject:
            return  # refused by np.load(allow_pickle=False), with its own message
        declared = math.prod(shape) * dtype.itemsize
        held = path.stat().st_size - handle.tell()
    if held != declared:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: .npy header declares shape {tuple(shape)} of {dtype} ({declared:,} bytes) "
            f"but the file holds {held:,}; truncated or corrupt?"
        )


def npy_inventory(path: Path) -> Inventory:
    """Inventory of a `.npy` file: one array, which must be a (K, C, kh, kw) weight."""
    try:
        _check_npy_size(path)
        array = np.load(path, allow_pickle=False)
    except LinearCNNInputError:
        raise
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise _numpy_error(path, exc) from None
    return single_array_inventory(
        path,
        shape=tuple(array.shape),
        dtype=str(array.dtype),
        floating=bool(np.issubdtype(array.dtype, np.floating)),
        fmt="npy",
        fetch=_const(array),
    )


def _npz_fetch(path: Path, name: str) -> Callable[[], np.ndarray]:
    """A zero-argument reader of the `.npz` member `name` as float64 (read only when called)."""
    return lambda: np.array(
        read_npz(path, f"checkpoint {str(path)!r}", names=[name], max_elements=MAX_ELEMENTS)[name], dtype=np.float64
    )


def npz_inventory(path: Path) -> Inventory:
    """Inventory of a `.npz` file: its floating-point 4-D arrays in file order (the first one is
    the first layer unless `layer=` names another); `initial_weight`/`init_weight` entries give
    the initial weights of the chosen layer when the shapes agree. Only the headers are read here."""
    members = npz_members(path, f"checkpoint {str(path)!r}")
    init_key = next((k for k in NPZ_INIT_KEYS if k in members and len(members[k].shape) == 4), None)
    entries = [
        (name, member.shape, bool(np.issubdtype(member.dtype, np.floating)), _npz_fetch(path, name))
        for name, member in members.items()
        if name != init_key
    ]
    candidates, others = tensor_candidates(entries, any_name=True)
    inv = Inventory(
        path=str(path),
        format="npz",
        candidates=candidates,
        order="file order",
        rule="first",
        other_tensors=others,
    )
    if init_key is not None:
        inv.shared_init = _npz_fetch(path, init_key)
        inv.shared_init_shape = members[init_key].shape
    return inv


_SAFETENSORS_FLOAT = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def safetensors_entries(path: Path) -> list[tuple[str, tuple[int, ...], bool, Callable[[], np.ndarray]]]:
    """(key, shape, is_floating, fetch) of every tensor of a safetensors file, in natural name
    order; only the header is read here, each tensor when its `fetch` is called."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = sorted(handle.keys(), key=natural_key)
            meta = {
                key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                for key in keys
            }
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: cannot read safetensors, truncated or corrupt? {exc}"
        ) from None

    def fetcher(key: str) -> Callable[[], np.ndarray]:  # a zero-argument reader of one tensor
        def fetch() -> np.ndarray:
            with safe_open(str(path), framework="pt") as reopened:
                return as_float64(reopened.get_tensor(key))

        return fetch

    return [(key, shape, dtype in _SAFETENSORS_FLOAT, fetcher(key)) for key, (shape, dtype) in meta.items()]


def safetensors_inventory(path: Path) -> Inventory:
    """Inventory of a safetensors file. Its tensors are stored sorted (by dtype, then name), not
    in module order, so candidates are listed in natural name order and the shape rule decides
    (a following BatchNorm is found by name, not by position)."""
    candidates, others = tensor_candidates(safetensors_entries(path), stored_order=False)
    return Inventory(
        path=str(path),
        format="safetensors",
        candidates=candidates,
        order="sorted name order",
        other_tensors=others,
    )

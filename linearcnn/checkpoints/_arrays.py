"""Files of plain named arrays: `.npy`, `.npz` and safetensors. None of them can run code: NumPy
is called with `allow_pickle=False` and safetensors holds no code by design."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

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


def npy_inventory(path: Path) -> Inventory:
    """Inventory of a `.npy` file: one array, which must be a (K, C, kh, kw) weight."""
    try:
        array = np.load(path, allow_pickle=False)
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


def npz_inventory(path: Path) -> Inventory:
    """Inventory of a `.npz` file: its floating-point 4-D arrays in file order (the first one is
    the first layer unless `layer=` names another); `initial_weight`/`init_weight` entries give
    the initial weights of the chosen layer when the shapes agree."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise _numpy_error(path, exc) from None
    init_key = next((k for k in NPZ_INIT_KEYS if k in arrays and arrays[k].ndim == 4), None)
    entries = [
        (name, tuple(a.shape), bool(np.issubdtype(a.dtype, np.floating)), _const(a))
        for name, a in arrays.items()
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
        inv.shared_init = _const(arrays[init_key])
        inv.shared_init_shape = tuple(arrays[init_key].shape)
    return inv


_SAFETENSORS_FLOAT = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def safetensors_inventory(path: Path) -> Inventory:
    """Inventory of a safetensors file. Its tensors are stored sorted (by dtype, then name), not
    in module order, so candidates are listed in natural name order and the shape rule decides."""
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

    entries = [
        (key, shape, dtype in _SAFETENSORS_FLOAT, fetcher(key))
        for key, (shape, dtype) in meta.items()
    ]
    candidates, others = tensor_candidates(entries)
    return Inventory(
        path=str(path),
        format="safetensors",
        candidates=candidates,
        order="sorted name order",
        other_tensors=others,
    )

"""The numeric arrays of a MATLAB v5 `.mat` file, read by our own bounded parser (no scipy).

SVHN ships its images as MATLAB v5 files. scipy's reader trusts the sizes inside the file: a
damaged one made it crash the interpreter (a segmentation fault, found by tests/test_fuzz.py), so
we read the format ourselves. A v5 file is a 128-byte header (bytes 126-127 "IM" or "MI" give the
byte order) and a sequence of data elements, each an 8-byte tag (type, byte count) or a 4-byte
"small" tag with its data, padded to 8 bytes. A variable is a miMATRIX element (possibly inside a
zlib-compressed miCOMPRESSED element) holding array flags (the MATLAB class), dimensions, the name
and the real part. `read_mat5` returns the requested numeric variables; every size is checked
against the bytes present and a value ceiling before anything is allocated, decompression is
capped by `linearcnn._npz.check_inflation`'s rule, and anything else (complex, sparse, cell,
struct, character arrays under a requested name) is one LinearCNNInputError.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from linearcnn._npz import INFLATION_FLOOR, MAX_INFLATION, check_inflation
from linearcnn.errors import LinearCNNInputError

_MI_MATRIX, _MI_COMPRESSED = 14, 15
#: Storage types of numeric data (miINT8 ... miUINT64).
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
#: Numeric MATLAB classes (mxDOUBLE_CLASS ... mxUINT64_CLASS) and the dtype each becomes.
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_COMPLEX_FLAG = 0x0800


def _elements(buffer: memoryview, order: str, where: str) -> Iterator[tuple[int, memoryview]]:
    """(type, data) of each data element in `buffer`, sizes checked against the bytes present."""
    at = 0
    while len(buffer) - at >= 8:
        (word,) = struct.unpack_from(f"{order}I", buffer, at)
        if word >> 16:  # small data element: type and size in one word, data in the next 4 bytes
            kind, size = word & 0xFFFF, word >> 16
            if size > 4:
                raise LinearCNNInputError(f"{where}: a small data element declares {size} bytes; expected at most 4")
            yield kind, buffer[at + 4 : at + 4 + size]
            at += 8
            continue
        (size,) = struct.unpack_from(f"{order}I", buffer, at + 4)
        if size > len(buffer) - at - 8:
            raise LinearCNNInputError(f"{where}: a data element declares {size:,} bytes but {len(buffer) - at - 8:,} follow; "
                                      "truncated or corrupt?")
        yield word, buffer[at + 8 : at + 8 + size]
        at += 8 + size + (0 if word == _MI_COMPRESSED else -size % 8)  # compressed elements are not padded


def _inflate(data: memoryview, bound: int, where: str) -> memoryview:
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(data, bound + 1)
    except zlib.error as exc:
        raise LinearCNNInputError(f"{where}: a compressed variable cannot be decompressed ({exc})") from None
    if len(out) > bound:
        check_inflation(where, len(out), len(data))  # raises: beyond the ratio rule
        raise LinearCNNInputError(f"{where}: a compressed variable decompresses beyond {bound:,} bytes")
    return memoryview(out)


def _variable(content: memoryview, order: str, where: str, wanted: Sequence[str], max_values: int
              ) -> tuple[str, np.ndarray] | None:
    """(name, array) of one miMATRIX element when its name is in `wanted`, else None."""
    parts = list(_elements(content, order, where))
    if len(parts) < 3 or len(parts[0][1]) < 8:
        raise LinearCNNInputError(f"{where}: a variable lacks its flags, dimensions or name; truncated or corrupt?")
    (flags,) = struct.unpack_from(f"{order}I", parts[0][1], 0)
    name = bytes(parts[2][1]).decode("latin1")
    if name not in wanted:
        return None
    mx_class = flags & 0xFF
    if mx_class not in _MX_DTYPES or flags & _COMPLEX_FLAG or len(parts) != 4:
        raise LinearCNNInputError(f"{where}: variable {name!r} is not a real numeric array (MATLAB class {mx_class})")
    dims_kind, dims_data = parts[1]
    if dims_kind != 5 or len(dims_data) % 4 or not dims_data:
        raise LinearCNNInputError(f"{where}: variable {name!r} has malformed dimensions")
    dims = struct.unpack(f"{order}{len(dims_data) // 4}i", dims_data)
    if min(dims) < 0 or math.prod(dims) > max_values:
        raise LinearCNNInputError(f"{where}: variable {name!r} declares dimensions {dims}; expected at most "
                                  f"{max_values:,} values")
    kind, data = parts[3]
    if kind not in _MI_DTYPES:
        raise LinearCNNInputError(f"{where}: variable {name!r} stores its values as type {kind}; expected a numeric type")
    stored = np.dtype(order + _MI_DTYPES[kind])
    if len(data) != math.prod(dims) * stored.itemsize:
        raise LinearCNNInputError(f"{where}: variable {name!r} declares {math.prod(dims):,} values of {stored.itemsize} bytes "
                                  f"but holds {len(data):,} bytes")
    values = np.frombuffer(data, dtype=stored).astype(_MX_DTYPES[mx_class])  # (prod(dims),)
    return name, values.reshape(dims, order="F")


def read_mat5(path: Path, names: Sequence[str], *, max_values: int, where: str) -> dict[str, np.ndarray]:
    """The numeric variables `names` of the MATLAB v5 file at `path` (those it has), each as MATLAB
    stores it (dimensions in MATLAB order). LinearCNNInputError, naming `where`, for anything else."""
    raw = path.read_bytes()
    order = {b"IM": "<", b"MI": ">"}.get(raw[126:128])
    if len(raw) < 128 or order is None:
        raise LinearCNNInputError(f"{where} is not a MATLAB v5 .mat file (its header lacks the byte-order mark)")
    if raw[:19] == b"MATLAB 7.3 MAT-file":
        raise LinearCNNInputError(f"{where} is a MATLAB 7.3 (HDF5) file; expected a v5 .mat file as SVHN ships")
    bound = max(INFLATION_FLOOR, MAX_INFLATION * len(raw))
    found: dict[str, np.ndarray] = {}
    for kind, data in _elements(memoryview(raw)[128:], order, where):
        if kind == _MI_COMPRESSED:
            inner = list(_elements(_inflate(data, bound, where), order, where))
            if len(inner) != 1:
                raise LinearCNNInputError(f"{where}: a compressed element holds {len(inner)} elements; expected one variable")
            kind, data = inner[0]
        if kind != _MI_MATRIX:
            continue
        variable = _variable(data, order, where, names, max_values)
        if variable is not None:
            found[variable[0]] = variable[1]
    return found


__all__ = ["read_mat5"]

"""Reading `.npz` archives with bounded memory: every array's declared size is checked first.

`numpy.load` trusts an array's header: a few-byte member declaring 1e11 elements makes it try to
allocate them (a traceback or the out-of-memory killer). `read_npz` reads each member's header
first, refuses an array beyond `max_elements` or one whose declared size disagrees with the bytes
the archive holds for it, and only then loads it (never with pickle).
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError

#: Default ceiling on one array: 2**25 elements (256 MB of float64).
MAX_ELEMENTS = 2**25


def read_npz(path: str | os.PathLike[str], where: str, *, max_elements: int = MAX_ELEMENTS) -> dict[str, NDArray[Any]]:
    """{name: array} of the `.npz` at `path`; LinearCNNInputError naming `where` for anything that is
    not a plain archive of arrays within `max_elements` each."""
    try:
        with zipfile.ZipFile(path) as archive:
            arrays: dict[str, NDArray[Any]] = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise LinearCNNInputError(f"{where}: member {info.filename!r} is not a .npy array; expected only arrays")
                name = info.filename[: -len(".npy")]
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)  # the header only
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise LinearCNNInputError(f"{where}: array {name!r} has .npy format {version}; expected 1.0 or 2.0")
                    header_end = member.tell()
                    if dtype.hasobject:
                        raise LinearCNNInputError(f"{where}: array {name!r} holds Python objects; expected numbers")
                    elements = math.prod(shape)
                    if elements > max_elements:
                        raise LinearCNNInputError(
                            f"{where}: array {name!r} declares shape {shape} ({elements:,} elements); expected at most {max_elements:,}"
                        )
                    if info.file_size - header_end != elements * dtype.itemsize:
                        raise LinearCNNInputError(
                            f"{where}: array {name!r} declares shape {shape} of {dtype} but holds "
                            f"{info.file_size - header_end} bytes; expected {elements * dtype.itemsize}"
                        )
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except LinearCNNInputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LinearCNNInputError(f"{where} is not a readable .npz archive ({first_line})") from None


__all__ = ["MAX_ELEMENTS", "read_npz"]

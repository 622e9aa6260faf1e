"""Reading `.npz` archives with bounded memory, and the decompression rule for every compressed input.

`numpy.load` trusts an array's header: a few-byte member declaring 1e11 elements makes it try to
allocate them, and a deflated member of zeros decompresses 1000-fold. Here:

* `npz_members` reads only each member's `.npy` header (a few hundred decompressed bytes; a header
  longer than `MAX_HEADER_BYTES` is refused before it is read) and refuses object arrays, other
  `.npy` versions and a declared size that disagrees with the bytes the archive holds for it;
* `read_npz` then reads the members asked for (all by default), or only the first rows of some
  (a data set read with `--limit`), each refused before allocation when it has more than
  `max_elements` values, and all together refused when they would decompress to more than
  `MAX_INFLATION` times their compressed bytes (beyond `INFLATION_FLOOR`); it never unpickles.

`check_inflation` is that last rule on its own, shared by the other compressed inputs we read
(torch zip checkpoints, gzip IDX files, compressed `.mat` variables): memory spent on decompressed
data stays proportional to the size of the file.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError

#: Default ceiling on one array: 2**25 elements (256 MB of float64).
MAX_ELEMENTS = 2**25
#: Most bytes decompressed per compressed byte (beyond the floor below). Image and weight data
#: compress 1-10 fold (MNIST's gzip files about 5 fold); deflate reaches 1032 fold only on
#: repeated bytes, which is what a decompression bomb is made of. At 32 a 4 MB file can ask for
#: at most 128 MB of decompressed data.
MAX_INFLATION = 32
#: Decompressed bytes allowed whatever the ratio: small arrays of zeros (an unused bias, a blank
#: test image) compress without limit and cost nothing worth refusing.
INFLATION_FLOOR = 64 * 2**20
#: Longest `.npy` header read (numpy's own `max_header_size` default): a header describes one
#: dtype and shape; a longer one is refused before it is read.
MAX_HEADER_BYTES = 10_000
#: Bytes copied per read from a member's stream.
_CHUNK = 2**20
#: What the zip and zlib modules raise for a corrupt, truncated, encrypted or odd archive.
_ZIP_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def check_inflation(where: str, decompressed: int, compressed: int) -> None:
    """LinearCNNInputError naming `where` when `decompressed` bytes (what a read would produce) exceed
    both INFLATION_FLOOR and MAX_INFLATION times the `compressed` bytes they come from."""
    if decompressed > max(INFLATION_FLOOR, MAX_INFLATION * compressed):
        raise LinearCNNInputError(
            f"{where} would decompress {compressed:,} bytes into {decompressed:,}; expected at most "
            f"{MAX_INFLATION} times the compressed size beyond {INFLATION_FLOOR // 2**20} MiB "
            "(a decompression bomb?)"
        )


@dataclass(frozen=True)
class NpyMember:
    """One `.npy` member of an archive, as its header describes it (`header_bytes` precede the data)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    header_bytes: int
    info: zipfile.ZipInfo

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def _read_exactly(stream: Any, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"EOF inside {what}")
    return bytes(data)


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, max_elements: int | None) -> NpyMember:
    """The header of one member (only its first bytes are decompressed), checked against its size."""
    name = info.filename[: -len(".npy")]
    with archive.open(info) as stream:
        magic = _read_exactly(stream, 8, f"the header of array {name!r}")
        if magic[:6] != b"\x93NUMPY" or (magic[6], magic[7]) not in ((1, 0), (2, 0)):
            raise LinearCNNInputError(
                f"{where}: array {name!r} has .npy magic {magic.hex()}; expected .npy format 1.0 or 2.0"
            )
        length_format = "<H" if magic[6] == 1 else "<I"
        length_bytes = _read_exactly(stream, struct.calcsize(length_format), f"the header of array {name!r}")
        (length,) = struct.unpack(length_format, length_bytes)
        if length > MAX_HEADER_BYTES:
            raise LinearCNNInputError(
                f"{where}: array {name!r} has a {length:,}-byte .npy header; expected at most {MAX_HEADER_BYTES:,}"
            )
        header = io.BytesIO(magic + length_bytes + _read_exactly(stream, length, f"the header of array {name!r}"))
    np.lib.format.read_magic(header)
    read_header = np.lib.format.read_array_header_1_0 if magic[6] == 1 else np.lib.format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read_header(header)
    except (ValueError, SyntaxError, tokenize.TokenError, TypeError) as exc:  # numpy parses the header as a literal
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LinearCNNInputError(f"{where}: array {name!r} has a malformed .npy header ({first_line})") from None
    member = NpyMember(name, tuple(int(n) for n in shape), dtype, bool(fortran_order), header.tell(), info)
    if dtype.hasobject:
        raise LinearCNNInputError(f"{where}: array {name!r} holds Python objects; expected numbers")
    if max_elements is not None and member.elements > max_elements:
        raise LinearCNNInputError(
            f"{where}: array {name!r} declares shape {member.shape} ({member.elements:,} elements); expected at most {max_elements:,}"
        )
    expected = member.elements * dtype.itemsize
    if info.file_size - member.header_bytes != expected:
        raise LinearCNNInputError(
            f"{where}: array {name!r} declares shape {member.shape} of {dtype} but holds "
            f"{info.file_size - member.header_bytes} bytes; expected {expected}"
        )
    return member


def _not_readable(where: str, exc: BaseException) -> LinearCNNInputError:
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LinearCNNInputError(f"{where} cannot be read: not a readable .npz archive ({first_line})")


def npz_members(path: str | os.PathLike[str], where: str, *, max_elements: int | None = None) -> dict[str, NpyMember]:
    """{name: header} of every member of the `.npz` at `path`, in file order; no array is read.
    LinearCNNInputError naming `where` for anything but a plain archive of consistent arrays (each
    within `max_elements`, when given)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members: dict[str, NpyMember] = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise LinearCNNInputError(f"{where}: member {info.filename!r} is not a .npy array; expected only arrays")
                member = _member_header(archive, info, where, max_elements)
                members[member.name] = member
            return members
    except LinearCNNInputError:
        raise
    except _ZIP_ERRORS as exc:
        raise _not_readable(where, exc) from None


def _read_member(archive: zipfile.ZipFile, member: NpyMember, rows: int | None, where: str) -> NDArray[Any]:
    """The array of `member` (or its first `rows` entries along axis 0), copied chunk by chunk into
    a buffer of exactly that size; a full read reaches the member's end, so its CRC is checked."""
    shape = member.shape
    if rows is not None and shape and not member.fortran_order:
        shape = (min(rows, shape[0]), *shape[1:])
    array = np.empty(math.prod(shape), dtype=member.dtype)
    target = array.view(np.uint8).reshape(-1)
    with archive.open(member.info) as stream:
        _read_exactly(stream, member.header_bytes, "the header")
        done = 0
        while done < len(target):
            chunk = stream.read(min(_CHUNK, len(target) - done))
            if not chunk:
                raise LinearCNNInputError(
                    f"{where}: array {member.name!r} ends after {done} of its {len(target)} bytes (truncated or corrupt)"
                )
            target[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        if shape == member.shape and stream.read(1):  # nothing follows: reads the end, checks the CRC
            raise LinearCNNInputError(f"{where}: array {member.name!r} holds more bytes than its header declares")
    result = array.reshape(shape, order="F" if member.fortran_order else "C")
    if rows is not None and member.fortran_order and shape:
        result = np.ascontiguousarray(result[:rows])
    return result


def read_npz(
    path: str | os.PathLike[str],
    where: str,
    *,
    max_elements: int = MAX_ELEMENTS,
    names: Iterable[str] | None = None,
    rows: Mapping[str, int] | None = None,
) -> dict[str, NDArray[Any]]:
    """{name: array} of the `.npz` at `path` (only `names`, when given; only the first `rows[name]`
    entries along axis 0 of the members in `rows`); LinearCNNInputError naming `where` for anything
    that is not a plain archive of arrays, for a read of more than `max_elements` values from one
    array, and for reads that would decompress beyond `check_inflation`'s bound. Sizes are checked
    before anything is allocated; an array read in part is not read (nor checked) beyond its rows."""
    members = npz_members(path, where, max_elements=max_elements if names is None and not rows else None)  # all read: refuse early
    wanted = list(members) if names is None else [name for name in names if name in members]
    rows = dict(rows or {})
    planned = compressed = 0
    for name in wanted:
        member = members[name]
        count = member.elements
        if name in rows and member.shape and not member.fortran_order:
            count = min(rows[name], member.shape[0]) * math.prod(member.shape[1:])
        if count > max_elements:
            raise LinearCNNInputError(
                f"{where}: array {name!r} declares shape {member.shape} ({count:,} values to read); expected at most {max_elements:,}"
            )
        planned += member.header_bytes + count * member.dtype.itemsize
        compressed += member.info.compress_size
    check_inflation(where, planned, compressed)
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: _read_member(archive, members[name], rows.get(name), where) for name in wanted}
    except LinearCNNInputError:
        raise
    except _ZIP_ERRORS as exc:
        raise _not_readable(where, exc) from None


__all__ = ["INFLATION_FLOOR", "MAX_ELEMENTS", "MAX_INFLATION", "NpyMember", "check_inflation", "npz_members", "read_npz"]

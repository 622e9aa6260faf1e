"""Reading a TorchScript archive (`torch.jit.save`) as data, without running anything from it.

The archive is a zip under one top folder `<name>/`: `data.pkl` (the module tree), `constants.pkl`
(tensors of frozen modules), their storages `data/<key>` and `constants/<key>`, and `code/` (the
TorchScript source, read as text elsewhere, never compiled or run). `torch.jit.load` would rebuild
every object with the archive's own `__setstate__` code; here the pickles are read by
`ArchiveUnpickler`, whose `find_class` knows only:

* `__torch__.*` classes (modules and scripted objects): each becomes an inert `ScriptObject`
  subclass that only records the state the pickle builds it with;
* `torch._utils._rebuild_tensor_v2`: our `_rebuild_tensor`, which checks the storage offset,
  sizes and strides against the storage and returns a `StoredTensor` (a description: the bytes
  are read when the tensor is used, from exactly the entry the pickle named);
* the storage types `torch.FloatStorage`, ... (their dtypes), `collections.OrderedDict` (empty
  backward hooks), `torch.device` (its name), and the `torch.jit._pickle` list builders and
  `restore_type_tag` (each returns its argument).

Any other global (`os.system`, `builtins.eval`, ...) stops unpickling before anything is called.
A storage is accepted only if its entry exists and holds exactly `numel * itemsize` bytes, and
the archive's compressed entries together may not inflate beyond `linearcnn._npz.check_inflation`
(`torch.jit.save` stores entries uncompressed; a deflated entry of zeros is a decompression bomb).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from linearcnn._npz import check_inflation
from linearcnn.errors import LinearCNNInputError

#: Storage classes named in TorchScript pickles, as the dtypes they hold.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_MAX_PICKLE_BYTES = 256 * 2**20  # data.pkl / constants.pkl hold structure, not weights
_MAX_DIMS = 16
_NAME = re.compile(r"[A-Za-z0-9_.]{1,300}")
_KEY = re.compile(r"[A-Za-z0-9_.]{1,100}")


class ArchiveError(Exception):
    """The archive is inconsistent or asks for something we never do; the message says what."""


class ScriptObject:
    """Inert stand-in for an object of a TorchScript class (`__torch__.*`): records its state.

    The pickle builds it with `NEWOBJ` (no arguments) then `BUILD`, which calls our
    `__setstate__` below, never the archive's.
    """

    qualname = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"ScriptObject({self.qualname})"


@dataclass(frozen=True, slots=True)  # slots: a pickle's BUILD cannot rewrite a checked field
class StorageRef:
    """A storage the pickle refers to: zip entry, dtype and element count (checked to agree)."""

    entry: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """A tensor as the archive describes it; `read` returns its values (a CPU copy)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def read(self, path: Path) -> torch.Tensor:
        """The tensor's values, read from the storage entry of the archive at `path`."""
        _checked_view(self.storage, self.offset, self.shape, self.stride)
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo(self.storage.entry)
                expected = self.storage.numel * self.dtype.itemsize
                if info.file_size != expected:
                    raise ArchiveError(f"storage {self.storage.entry} holds {info.file_size} bytes, expected {expected}")
                data = archive.read(info)  # the zip module checks the length and CRC
        except (zipfile.BadZipFile, OSError, KeyError, EOFError, ValueError, zlib.error) as exc:
            raise ArchiveError(f"cannot read storage {self.storage.entry} ({type(exc).__name__}: {_line(exc)[:160]})") from None
        if len(data) != expected:
            raise ArchiveError(f"storage {self.storage.entry} holds {len(data)} bytes, expected {expected}")
        flat = torch.frombuffer(bytearray(data), dtype=self.dtype) if data else torch.empty(0, dtype=self.dtype)
        return flat.as_strided(self.shape, self.stride, self.offset).clone()


@dataclass
class Archive:
    """What a TorchScript archive holds, as data."""

    path: Path
    root: Any  # the unpickled data.pkl: a ScriptObject for a module
    constants: tuple[Any, ...]  # the unpickled constants.pkl (`CONSTANTS.c0`, ...)
    code: dict[str, str]  # dotted module name ("__torch__.linearcnn.models") -> source text


def _line(error: Exception) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split())


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is not accepted either
        raise ArchiveError(f"tensor {what} {value!r} is not a non-negative integer")
    return value


def _checked_view(storage: Any, offset: Any, size: Any, stride: Any) -> StoredTensor:
    """The tensor view (`offset`, `size`, `stride`) of `storage`, after checking that it fits."""
    if not isinstance(storage, StorageRef):
        raise ArchiveError("a tensor is not built on a storage of the archive")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride) or len(size) > _MAX_DIMS:
        raise ArchiveError(f"tensor sizes {str(size)[:80]} and strides {str(stride)[:80]} do not match")
    shape = tuple(_int(n, "size") for n in size)
    steps = tuple(_int(n, "stride") for n in stride)
    start = _int(offset, "storage offset")
    numel = math.prod(shape)
    if numel:  # no view reaches past its storage, or has more elements than it (no amplification)
        end = start + sum((n - 1) * step for n, step in zip(shape, steps))
        if end >= storage.numel or numel > storage.numel:
            raise ArchiveError(
                f"tensor of shape {shape} (strides {steps}, offset {start}) does not fit its storage "
                f"{storage.entry} of {storage.numel} elements"
            )
    return StoredTensor(storage, start, shape, steps)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> StoredTensor:
    """`torch._utils._rebuild_tensor_v2` as data (`requires_grad`, hooks and metadata ignored)."""
    return _checked_view(storage, offset, size, stride)


def _same(value: Any, *_: Any) -> Any:
    """`build_intlist`, `restore_type_tag`, ...: the value itself (its type tag is not needed)."""
    return value


def _device(name: Any) -> str:
    if not isinstance(name, str):
        raise ArchiveError(f"device {name!r} is not a string")
    return name


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "device"): _device,
    **{
        ("torch.jit._pickle", name): _same
        for name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_complexlist", "restore_type_tag")
    },
}


class ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl`/`constants.pkl` of a TorchScript archive into inert data (module docstring)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, storage_folder: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._folder = storage_folder  # "<name>/data/" or "<name>/constants/"
        self._classes: dict[str, type[ScriptObject]] = {}
        self._storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        qualname = f"{module}.{name}"
        if (module == "__torch__" or module.startswith("__torch__.")) and _NAME.fullmatch(qualname):
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname, "__module__": __name__})
            return self._classes[qualname]
        raise pickle.UnpicklingError(
            f"it would call {qualname[:120]}, and only tensors and TorchScript objects are rebuilt"
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArchiveError(f"unknown persistent id {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ArchiveError(f"malformed storage reference {str(pid)[:80]}")
        numel = _int(numel, "storage size")
        entry = self._folder + key
        if entry in self._storages:
            known = self._storages[entry]
            if (known.dtype, known.numel) != (dtype, numel):
                raise ArchiveError(f"storage {entry} is declared twice with different sizes")
            return known
        try:
            info = self._archive.getinfo(entry)
        except KeyError:
            raise ArchiveError(f"storage {entry} is missing") from None
        expected = numel * dtype.itemsize
        if info.file_size != expected:
            raise ArchiveError(f"storage {entry} holds {info.file_size} bytes, but its tensor declares {expected}")
        self._storages[entry] = StorageRef(entry, dtype, numel)
        return self._storages[entry]


def _prefix(names: list[str]) -> str:
    """The archive's top folder ("model/"), from the entry that ends in `data.pkl`."""
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    for top in sorted(tops):
        if f"{top}/data.pkl" in names:
            return top + "/"
    raise ArchiveError("no data.pkl in the archive")


def _unpickle(archive: zipfile.ZipFile, entry: str, storage_folder: str) -> Any:
    info = archive.getinfo(entry)
    if info.file_size > _MAX_PICKLE_BYTES:
        raise ArchiveError(f"{entry} is {info.file_size} bytes, more than {_MAX_PICKLE_BYTES} for a module's structure")
    data = archive.read(info)
    try:
        return ArchiveUnpickler(data, archive, storage_folder).load()
    except ArchiveError:
        raise
    except pickle.UnpicklingError as exc:
        raise ArchiveError(f"{entry}: {_line(exc)}") from None
    except Exception as exc:  # a malformed pickle (MemoryError included): any error is bad input
        raise ArchiveError(f"{entry} is not a valid pickle ({type(exc).__name__}: {_line(exc)[:120]})") from None


def read_code(archive: zipfile.ZipFile, prefix: str, limit: int) -> dict[str, str]:
    """TorchScript source files under `code/` as text (`__torch__/a/b.py` -> `__torch__.a.b`),
    or an empty dict if they are larger than `limit` bytes in all or not UTF-8."""
    code: dict[str, str] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        if not (name.startswith(prefix + "code/") and name.endswith(".py")):
            continue
        total += info.file_size
        if total > limit:
            return {}
        module = name[len(prefix + "code/") : -len(".py")].replace("/", ".")
        try:
            code[module] = archive.read(info).decode("utf-8")
        except UnicodeDecodeError:
            return {}
    return code


def read_archive(path: Path, *, code_limit: int = 16 * 2**20) -> Archive:
    """The module tree, constants and code text of the TorchScript archive at `path`.

    Raises:
        LinearCNNInputError: a corrupt archive, an inconsistent storage, or a pickle that names
            anything but the tensor and TorchScript-object builders listed in the module docstring.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            compressed = [info for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
            check_inflation(
                f"checkpoint {str(path)!r}", sum(i.file_size for i in compressed), sum(i.compress_size for i in compressed)
            )
            prefix = _prefix(names)
            order = "little"  # archives before the `byteorder` entry were all little-endian
            if prefix + "byteorder" in names and archive.getinfo(prefix + "byteorder").file_size <= 16:
                order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order != sys.byteorder:
                raise ArchiveError(f"tensors are stored {order[:20]}-endian; this machine is {sys.byteorder}-endian")
            root = _unpickle(archive, prefix + "data.pkl", prefix + "data/")
            constants: Any = ()
            if prefix + "constants.pkl" in names:
                constants = _unpickle(archive, prefix + "constants.pkl", prefix + "constants/")
            code = read_code(archive, prefix, code_limit)
    except LinearCNNInputError:
        raise
    except ArchiveError as exc:
        raise LinearCNNInputError(f"checkpoint {str(path)!r}: TorchScript archive refused, {_line(exc)}; nothing from it was run") from None
    except (zipfile.BadZipFile, OSError, KeyError, EOFError, ValueError, zlib.error) as exc:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: cannot read TorchScript archive, truncated or corrupt? ({type(exc).__name__}: {_line(exc)[:160]})"
        ) from None
    return Archive(path=path, root=root, constants=constants if isinstance(constants, tuple) else (), code=code)


__all__ = ["Archive", "ArchiveError", "ScriptObject", "StoredTensor", "read_archive"]

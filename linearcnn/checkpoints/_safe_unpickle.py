"""Reading TorchScript archives (`torch.jit.save`) and zip-format `torch.save` files as data,
without running anything from them and without torch.

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

A zip-format `torch.save` file has the same layout without `code/` and `constants.pkl`.
`read_torch_save` reads its `data.pkl` with a narrower table: tensors, `_rebuild_parameter` (the
tensor itself), `OrderedDict`, `torch.device` and the storage types; no `__torch__` class. That
is a subset of what `torch.load(weights_only=True)` rebuilds, so a file it reads is one torch
would read the same way; anything else (the metadata stand-ins of `_metadata`, a module class,
a quantized tensor) becomes an inert `Unknown` that is never called, and makes it return None:
the caller then loads the file with torch, whose refusals and messages are the reference
(`_torch_load`). Its storages are checked either way, since torch's memory-mapped load does not.
This path imports no torch: a `fit` on a plain state dict or on our own checkpoints starts
without torch's second of imports.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn._npz import check_inflation
from linearcnn.errors import LinearCNNInputError


@dataclass(frozen=True, slots=True)
class ElementType:
    """What a storage holds: torch's name for it, its size and NumPy's dtype for its bytes.

    bfloat16 has no NumPy dtype: its bytes are read as uint16 and widened exactly to float32."""

    name: str  # "float32", "bfloat16", ... (torch's dtype name)
    itemsize: int
    is_floating_point: bool  # as torch says it (complex: False)
    numpy: str  # the dtype of the stored bytes

    def __str__(self) -> str:
        return f"torch.{self.name}"  # as torch prints its dtypes


def _element(name: str, numpy: str, floating: bool) -> ElementType:
    return ElementType(name, np.dtype(numpy).itemsize, floating, numpy)


#: Storage classes named in the pickles, as the element types they hold.
STORAGE_TYPES: dict[str, ElementType] = {
    "FloatStorage": _element("float32", "<f4", True),
    "DoubleStorage": _element("float64", "<f8", True),
    "HalfStorage": _element("float16", "<f2", True),
    "BFloat16Storage": _element("bfloat16", "<u2", True),
    "ComplexFloatStorage": _element("complex64", "<c8", False),
    "ComplexDoubleStorage": _element("complex128", "<c16", False),
    "LongStorage": _element("int64", "<i8", False),
    "IntStorage": _element("int32", "<i4", False),
    "ShortStorage": _element("int16", "<i2", False),
    "CharStorage": _element("int8", "i1", False),
    "ByteStorage": _element("uint8", "u1", False),
    "BoolStorage": _element("bool", "?", False),
}
_MAX_PICKLE_BYTES = 256 * 2**20  # data.pkl / constants.pkl hold structure, not weights
#: Largest `data.pkl` of a `torch.save` file read: it holds the structure (keys, shapes, storage
#: ids: about 150 bytes per tensor), not the weights, so 64 MiB is hundreds of thousands of
#: tensors; unpickling may take tens of times its size, so a larger one is refused (`_torch_load`).
MAX_PICKLE_BYTES = 64 * 2**20
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
    dtype: ElementType
    numel: int


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """A tensor as the archive describes it; `read` returns its values (a CPU copy)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    is_nested = False  # what the state-dict inventory asks a torch tensor too

    @property
    def dtype(self) -> ElementType:
        return self.storage.dtype

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def read(self, path: Path) -> np.ndarray:
        """The tensor's values (a NumPy copy; bfloat16 widened to float32), read from the storage
        entry of the archive at `path`."""
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
        flat = np.frombuffer(data, dtype=self.dtype.numpy)
        item = flat.itemsize
        values = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.shape, tuple(step * item for step in self.stride), writeable=False
        ) if flat.size else np.zeros(self.shape, dtype=flat.dtype)
        if self.dtype.name == "bfloat16":  # the upper half of a float32: exact
            return (values.astype(np.uint32) << 16).view(np.float32)
        return np.array(values)


def float64_reader(path: Path, tensor: StoredTensor, what: str) -> Callable[[], np.ndarray]:
    """A zero-argument reader of `tensor` from the archive at `path`, as float64; a storage found
    damaged then (the file changed after its structure was read) is a one-line error naming `what`."""

    def fetch() -> np.ndarray:
        try:
            return np.asarray(tensor.read(path), dtype=np.float64)
        except ArchiveError as exc:
            raise LinearCNNInputError(f"checkpoint {str(path)!r}: {what} is truncated or corrupt, {_line(exc)}") from None

    return fetch


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


def _device(name: Any, index: Any = None) -> str:
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ArchiveError(f"device {name!r} is not a name or an index")
    return str(name) if index is None else f"{name}:{index}"


def _parameter(data: Any, *_: Any) -> Any:
    """`torch._utils._rebuild_parameter` as data: the tensor (`requires_grad` and hooks ignored)."""
    return data


class Unknown:
    """Inert stand-in for a global a `torch.save` pickle names beyond the narrow table: called,
    built or given state, it only records what it was given. Its presence makes `read_torch_save`
    hand the file to torch, after the pass has checked every storage."""

    qualname = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


#: What both kinds of archive may call: the tensor builder, OrderedDict and torch.device.
_COMMON: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "device"): _device,
}

#: The functions each kind of pickle may call (besides the storage types, and `__torch__`
#: classes in TorchScript).
_FUNCTIONS: dict[str, dict[tuple[str, str], Any]] = {
    "torchscript": {
        **_COMMON,
        **{
            ("torch.jit._pickle", name): _same
            for name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_complexlist", "restore_type_tag")
        },
    },
    "torch-save": {**_COMMON, ("torch._utils", "_rebuild_parameter"): _parameter},
}


class ArchiveUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl`/`constants.pkl` of a TorchScript archive (`kind="torchscript"`) or the
    `data.pkl` of a `torch.save` file (`kind="torch-save"`) into inert data (module docstring)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, storage_folder: str, kind: str = "torchscript") -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._folder = storage_folder  # "<name>/data/" or "<name>/constants/"
        self._kind = kind
        self._classes: dict[str, type[ScriptObject]] = {}
        self._storages: dict[str, StorageRef] = {}
        self.unknown: list[str] = []  # globals beyond the table ("torch-save" only), in order met

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_TYPES:
            return STORAGE_TYPES[name]
        if (module, name) in _FUNCTIONS[self._kind]:
            return _FUNCTIONS[self._kind][(module, name)]
        qualname = f"{module}.{name}"
        if self._kind == "torchscript" and (module == "__torch__" or module.startswith("__torch__.")) and _NAME.fullmatch(qualname):
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname, "__module__": __name__})
            return self._classes[qualname]
        if self._kind == "torch-save":  # never called: recorded, and the file goes to torch
            self.unknown.append(qualname[:120])
            return type(name if name.isidentifier() else "Unknown", (Unknown,), {"qualname": qualname, "__module__": __name__})
        raise pickle.UnpicklingError(
            f"it would call {qualname[:120]}, and only tensors and TorchScript objects are rebuilt"
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArchiveError(f"unknown persistent id {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, ElementType) or not isinstance(key, str) or not _KEY.fullmatch(key):
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


def _checked_prefix(path: Path, archive: zipfile.ZipFile) -> tuple[str, str]:
    """The archive's top folder and the byte order of its tensors, after bounding what its
    compressed entries inflate to."""
    names = archive.namelist()
    compressed = [info for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    check_inflation(f"checkpoint {str(path)!r}", sum(i.file_size for i in compressed), sum(i.compress_size for i in compressed))
    prefix = _prefix(names)
    order = "little"  # archives before the `byteorder` entry were all little-endian
    if prefix + "byteorder" in names and archive.getinfo(prefix + "byteorder").file_size <= 16:
        order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
    return prefix, order


def read_torch_save(path: Path) -> Any | None:
    """The object a zip-format `torch.save` file holds, its tensors as `StoredTensor`s (read when
    used), or None when it names a global beyond the narrow table of the module docstring, or is
    not a well-formed pickle: the caller then loads it with torch, whose checks and messages are
    the reference. Either way every storage the pickle declares has been checked against its zip
    entry first (torch's memory-mapped load does not check, and reads past a short entry).
    Nothing from the file is called; torch is not imported.

    Raises:
        LinearCNNInputError: compressed entries that would inflate too far, or a storage that is
            missing, of another size than its tensors declare, or too small for a view of it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(_prefix(archive.namelist()) + "data.pkl")
            if info.file_size > MAX_PICKLE_BYTES:  # `_torch_load` refuses it, naming data.pkl
                return None
            prefix, order = _checked_prefix(path, archive)
            if order != sys.byteorder:  # torch swaps the bytes
                return None
            unpickler = ArchiveUnpickler(archive.read(info), archive, prefix + "data/", kind="torch-save")
            root = unpickler.load()
    except LinearCNNInputError:
        raise
    except ArchiveError as exc:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r} is truncated or corrupt: {_line(exc)}; expected storages as its tensors declare them"
        ) from None
    except Exception:  # not well-formed (or a stand-in misused): torch says what is wrong
        return None
    return None if unpickler.unknown else root


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
            prefix, order = _checked_prefix(path, archive)
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


__all__ = [
    "MAX_PICKLE_BYTES",
    "STORAGE_TYPES",
    "Archive",
    "ArchiveError",
    "ElementType",
    "ScriptObject",
    "StoredTensor",
    "Unknown",
    "float64_reader",
    "read_archive",
    "read_torch_save",
]

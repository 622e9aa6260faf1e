"""Inert rebuilding of the metadata that training scripts pickle next to their weights.

timm and the torchvision reference scripts save `'args': argparse.Namespace(...)`, Lightning
saves `pathlib` paths among its hyper-parameters, many scripts store numpy scalars (`np.float64`
metrics, `np.int64` epochs), datetimes or defaultdicts. `torch.load(weights_only=True)` refuses
all of these. `SAFE_GLOBALS` lets it read them without ever calling a class or function *named
by the file*: each allowed pickle name is bound (torch's `safe_globals` `(object, "name")`
pairs) to a stand-in of ours that checks its arguments and builds a plain value:

* `argparse.Namespace` -> `Namespace`, an `argparse.Namespace` subclass: created without
  arguments (pickle's NEWOBJ), then filled by our `__setstate__` (pickle's BUILD) from a dict
  of string keys (no `__dunder__` names) whose values the restricted unpickler already built.
* `pathlib.PosixPath` / `PurePosixPath` -> `PurePosixPath`, `WindowsPath` / `PureWindowsPath`
  -> `PureWindowsPath` (also under `pathlib._local`, Python 3.13's module), from string parts
  only. Pure paths never touch the file system, and a concrete path of the other operating
  system (a `WindowsPath` on Linux) cannot be built at all.
* numpy (`numpy.core.*` and numpy 2's `numpy._core.*` names): `numpy.dtype` -> `NumpyDType`, a
  record of a plain numeric, bool or fixed-width string dtype (`b1`, `i1`..`u8`, `f2`..`f8`,
  `c8`, `c16`, `U<n>`, `S<n>`) and the byte order its state names (object, structured, void and
  datetime dtypes are refused); `multiarray.scalar` -> the numpy scalar read from exactly
  `itemsize` bytes with `np.frombuffer`; `multiarray._reconstruct` + BUILD -> `CheckedArray`, an
  ndarray subclass whose `__setstate__` checks the shape, dtype and that the bytes are exactly
  `prod(shape) * itemsize` long before numpy copies them in. `numpy.ndarray` itself is only a
  marker that `_reconstruct` accepts; it cannot be called.
* `datetime.datetime` / `date` / `timedelta` / `timezone`: the real types, called only with the
  argument shapes pickle writes (packed bytes of the exact length, integers, a timezone).
* `collections.defaultdict`: its `default_factory` must be a builtin type (list, dict, set, int,
  float, str, bytes, tuple, bool, frozenset) or None, else it is refused; it comes back as a
  plain `dict` of its items (torch's unpickler fills only exact dicts), the factory dropped.
  `OrderedDict`, `Counter`, `set`, lists, tuples and dicts are torch's own.
* `builtins.list`, `dict`, `int`, ... -> `BuiltinType` markers: callable only with no arguments
  (the empty value; `bytes()` is how pickle writes `b""`) or, for `frozenset`/`tuple`/`list`, one
  list, tuple or set. A bare type stored as a value comes back as its marker (`.type`).

Enum members are not rebuilt: pickle names the enum's own class, and calling it (or importing its
module to find out it is an enum) runs that module's code, so they are refused like any class.
A check that fails raises `MetadataRefused`, whose message names the pickle's class.
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

_MAX_PARTS = 4096  # path components
_MAX_DIMS = 32  # numpy's own limit is 64
_DTYPE_NAME = re.compile(r"b1|[iu][1248]|f[248]|c8|c16|[US][0-9]{1,7}")


class MetadataRefused(Exception):
    """A pickled metadata value failed its check; the message (one line) names its class and why."""


class _Marker:
    """A pickle name that may appear only as an argument of one of our builders (`numpy.ndarray`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any) -> Any:
        raise MetadataRefused(f"{self.name} is accepted only as the class numpy's _reconstruct names, not called")

    def __repr__(self) -> str:
        return f"<{self.name} (marker)>"


_NDARRAY = _Marker("numpy.ndarray")


class BuiltinType:
    """Stand-in for a builtin type named by a pickle (`builtins.list`, ...); see the module docstring."""

    def __init__(self, kind: type) -> None:
        self.type = kind

    def __call__(self, *args: Any) -> Any:
        if not args:
            return self.type()
        if self.type in (frozenset, tuple, list) and len(args) == 1 and type(args[0]) in (list, tuple, set):
            return self.type(args[0])
        raise MetadataRefused(f"builtins.{self.type.__name__} is rebuilt only empty or from one list, not called with {_kinds(args)}")

    def __repr__(self) -> str:
        return f"<class '{self.type.__name__}' (marker)>"


def _kinds(args: tuple[Any, ...]) -> str:
    """The argument types, for a message."""
    return "(" + ", ".join(type(a).__name__ for a in args[:6]) + (", ..." if len(args) > 6 else "") + ")"


class Namespace(argparse.Namespace):
    """`argparse.Namespace` from a pickle: made empty, then filled from a checked attribute dict."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Namespace:
        if args or kwargs:
            raise MetadataRefused(f"argparse.Namespace is rebuilt only from its attribute dict, not called with {_kinds(args)}")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict:
            raise MetadataRefused(f"argparse.Namespace state must be a dict of attributes, got a {type(state).__name__}")
        for key in state:
            if type(key) is not str or (key.startswith("__") and key.endswith("__")):
                shown = repr(key[:60]) if type(key) is str else f"of type {type(key).__name__}"
                raise MetadataRefused(f"argparse.Namespace attribute {shown} refused: only plain names are rebuilt")
        self.__dict__.update(state)

    def __reduce__(self) -> tuple[Any, ...]:
        return (argparse.Namespace, (), dict(vars(self)))  # pickles (and copies) as a plain Namespace


def _path_builder(name: str, flavour: type[PurePath]) -> Any:
    def build(*parts: Any) -> PurePath:
        if len(parts) > _MAX_PARTS or not all(type(part) is str for part in parts):
            raise MetadataRefused(f"{name} is rebuilt only from strings, got {_kinds(parts)}")
        return flavour(*parts)

    build.__qualname__ = build.__name__ = f"rebuild_{name.rsplit('.', 1)[-1]}"
    return build


class NumpyDType:
    """A numpy dtype named by a pickle, checked; `.dtype` is the `numpy.dtype`."""

    def __init__(self, name: Any) -> None:
        if type(name) is not str or not _DTYPE_NAME.fullmatch(name):
            raise MetadataRefused(
                f"numpy.dtype {str(name)[:40]!r} refused: only bool, integer, float, complex and fixed-width string dtypes are rebuilt"
            )
        self.name = name
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Any) -> None:
        """numpy's dtype state `(version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])`."""
        if type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise MetadataRefused(f"numpy.dtype {self.name!r}: unexpected state {str(state)[:80]}")
        order, rest, sizes = state[1], state[2:5] + state[8:], state[5:8]
        if order not in ("<", ">", "|", "=") or any(v is not None for v in rest) or not all(type(v) is int for v in sizes):
            raise MetadataRefused(f"numpy.dtype {self.name!r}: only plain dtypes are rebuilt (state {str(state)[:80]})")
        if sizes[0] not in (-1, self.dtype.itemsize):
            raise MetadataRefused(f"numpy.dtype {self.name!r}: element size {sizes[0]} disagrees with {self.dtype.itemsize}")
        self.dtype = np.dtype(self.name).newbyteorder(order) if order in "<>" else np.dtype(self.name)

    def __reduce__(self) -> Any:
        return self.dtype.__reduce__()  # pickles (and copies) as the numpy dtype

    def __repr__(self) -> str:
        return f"NumpyDType({self.dtype!r})"


def _dtype(name: Any, align: Any = False, copy: Any = True, *rest: Any) -> NumpyDType:
    if type(align) is not bool or type(copy) is not bool or rest:
        raise MetadataRefused(f"numpy.dtype is rebuilt only from a name and two flags, got {_kinds((name, align, copy, *rest))}")
    return NumpyDType(name)


def _checked_dtype(dtype: Any, what: str) -> np.dtype:
    if not isinstance(dtype, NumpyDType):
        raise MetadataRefused(f"{what} needs a numpy.dtype, got a {type(dtype).__name__}")
    return dtype.dtype


def _scalar(dtype: Any, data: Any = None, *rest: Any) -> Any:
    kind = _checked_dtype(dtype, "numpy scalar")
    if type(data) is not bytes or len(data) != kind.itemsize or rest:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else f"a {type(data).__name__}"
        raise MetadataRefused(f"numpy scalar of dtype {kind}: expected {kind.itemsize} bytes, got {got}")
    if kind.kind == "b" and data not in (b"\x00", b"\x01"):
        raise MetadataRefused(f"numpy bool scalar holds byte {data!r}, not 0 or 1")
    return np.frombuffer(data, dtype=kind)[0]


class CheckedArray(np.ndarray):
    """A numpy array from a pickle: made empty by `_reconstruct`, filled by a checked `__setstate__`."""

    def __new__(cls, *args: Any, **kwargs: Any) -> CheckedArray:  # numpy's views and copies never call it
        raise MetadataRefused("CheckedArray is made only by numpy's _reconstruct")

    def __setstate__(self, state: Any) -> None:
        if self.shape != (0,):
            raise MetadataRefused("numpy.ndarray state given twice")
        if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[0]) is not int:
            raise MetadataRefused(f"numpy.ndarray: unexpected state {str(state)[:80]}")
        _, shape, dtype, fortran, data = state
        kind = _checked_dtype(dtype, "numpy.ndarray")
        if type(shape) is not tuple or len(shape) > _MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
            raise MetadataRefused(f"numpy.ndarray: shape {str(shape)[:80]} is not a tuple of sizes")
        expected = math.prod(shape) * kind.itemsize
        if type(fortran) is not bool or type(data) is not bytes or len(data) != expected:
            got = f"{len(data)}" if isinstance(data, bytes) else f"a {type(data).__name__}"
            raise MetadataRefused(f"numpy.ndarray of shape {shape} and dtype {kind}: expected {expected} bytes of data, got {got}")
        if kind.kind == "b" and data.strip(b"\x00\x01"):
            raise MetadataRefused("numpy bool array holds bytes other than 0 and 1")
        checked: Any = (1, shape, kind, fortran, data)
        super().__setstate__(checked)

    def __reduce__(self) -> Any:
        return self.view(np.ndarray).__reduce__()  # pickles (and copies) as a plain ndarray


def _reconstruct(cls: Any, shape: Any = None, typecode: Any = None, *rest: Any) -> CheckedArray:
    if cls is not _NDARRAY or shape != (0,) or typecode != b"b" or rest:
        raise MetadataRefused(f"numpy _reconstruct is rebuilt only for numpy.ndarray, not {type(cls).__name__} {cls!r:.60}")
    return np.ndarray.__new__(CheckedArray, (0,), dtype=np.uint8)


def _timezone(offset: Any, name: Any = None, *rest: Any) -> datetime.timezone:
    if type(offset) is not datetime.timedelta or not (name is None or type(name) is str) or rest:
        raise MetadataRefused(f"datetime.timezone is rebuilt only from a timedelta and a name, got {_kinds((offset, name))}")
    return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)


def _datetime(packed: Any = None, tz: Any = None, *rest: Any) -> datetime.datetime:
    if type(packed) is not bytes or len(packed) != 10 or not (tz is None or type(tz) is datetime.timezone) or rest:
        raise MetadataRefused(f"datetime.datetime is rebuilt only from its 10 packed bytes and a timezone, got {_kinds((packed, tz))}")
    build: Any = datetime.datetime  # its pickle form, (packed bytes[, tz]), is not in the type stubs
    return build(packed) if tz is None else build(packed, tz)


def _date(packed: Any = None, *rest: Any) -> datetime.date:
    if type(packed) is not bytes or len(packed) != 4 or rest:
        raise MetadataRefused(f"datetime.date is rebuilt only from its 4 packed bytes, got {_kinds((packed, *rest))}")
    build: Any = datetime.date  # its pickle form, (packed bytes,), is not in the type stubs
    return build(packed)


def _timedelta(*args: Any) -> datetime.timedelta:
    if len(args) > 3 or not all(type(a) is int for a in args):
        raise MetadataRefused(f"datetime.timedelta is rebuilt only from integers, got {_kinds(args)}")
    return datetime.timedelta(*args)


#: What a defaultdict's factory may be: the builtin types a safe pickle can name.
_FACTORY_TYPES = (list, dict, set, int, float, str, bytes, tuple, bool, frozenset)


def _defaultdict(factory: Any = None, *rest: Any) -> dict[Any, Any]:
    kind = factory.type if isinstance(factory, BuiltinType) else factory
    if rest or not (factory is None or (isinstance(kind, type) and kind in _FACTORY_TYPES)):
        raise MetadataRefused(
            f"collections.defaultdict with default_factory {_describe(factory)} refused: only builtin types "
            "(list, dict, set, int, float, str, ...) are allowed as its factory"
        )
    return {}  # torch's unpickler fills only exact dicts (SETITEMS); the factory is dropped


def _describe(obj: Any) -> str:
    """A value for a message: a class or function by its dotted name, anything else by its type."""
    if isinstance(obj, (type, BuiltinType, _Marker)) or callable(obj):
        inner = obj.type if isinstance(obj, BuiltinType) else obj
        if isinstance(inner, _Marker):
            return inner.name
        return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"
    return f"a {type(obj).__name__}"


def _numpy_names() -> list[tuple[Any, str]]:
    names: list[tuple[Any, str]] = [(_dtype, "numpy.dtype"), (_NDARRAY, "numpy.ndarray")]
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell the module differently
        names += [(_scalar, f"{core}.multiarray.scalar"), (_reconstruct, f"{core}.multiarray._reconstruct")]
    return names


def _path_names() -> list[tuple[Any, str]]:
    flavours = {
        "PosixPath": PurePosixPath,
        "PurePosixPath": PurePosixPath,
        "WindowsPath": PureWindowsPath,
        "PureWindowsPath": PureWindowsPath,
    }
    return [
        (_path_builder(f"{module}.{cls}", flavour), f"{module}.{cls}")
        for module in ("pathlib", "pathlib._local")
        for cls, flavour in flavours.items()
    ]


#: `(stand-in, "pickle name")` pairs for `torch.serialization.safe_globals`; the module docstring
#: says how each is rebuilt. `CheckedArray` is listed under a name no pickle can spell (GLOBAL
#: names end at a newline) only so that torch lets BUILD reach its checked `__setstate__`;
#: `Namespace` and `NumpyDType` are likewise BUILD targets (the former also under its pickle name).
SAFE_GLOBALS: list[tuple[Any, str]] = [
    (Namespace, "argparse.Namespace"),
    *_path_names(),
    *_numpy_names(),
    (CheckedArray, "linearcnn\n.CheckedArray"),
    (NumpyDType, "linearcnn\n.NumpyDType"),
    (_datetime, "datetime.datetime"),
    (_date, "datetime.date"),
    (_timedelta, "datetime.timedelta"),
    (_timezone, "datetime.timezone"),
    (_defaultdict, "collections.defaultdict"),
    *((BuiltinType(kind), f"builtins.{kind.__name__}") for kind in (list, dict, int, float, str, bytes, tuple, bool, frozenset)),
]


__all__ = ["SAFE_GLOBALS", "BuiltinType", "CheckedArray", "MetadataRefused", "Namespace", "NumpyDType"]

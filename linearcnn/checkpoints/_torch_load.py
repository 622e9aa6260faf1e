"""Loading a `torch.save` file safely: `torch.load(weights_only=True)` on the CPU, errors in one line.

`weights_only=True` rebuilds only tensors, containers and primitives, plus `_HARMLESS_GLOBALS`
and the inert metadata of `_metadata.SAFE_GLOBALS` (argparse.Namespace, pathlib paths, numpy
scalars and arrays, datetimes, defaultdicts: each rebuilt by a checking stand-in of ours, never by
the class the file names). Any other Python global in the pickle (a model class, `os.system`, ...)
makes it stop *before* calling anything, and `torch_load` turns that, or a stand-in's
`MetadataRefused`, into a one-line `LinearCNNInputError` naming the class. The same allowlist
serves zip and legacy (non-zip) files: torch reads both with one unpickler. Shared by the
checkpoint inventory (`_torch_pickle`) and the training-checkpoint reader (`training`).

Before torch reads a zip-format file, `check_zip_checkpoint` bounds what it would decompress:
`torch.save` stores entries uncompressed (memory-mapped here), but torch also reads deflated
entries, each into one buffer of its declared size, so a 2 MB archive could ask for gigabytes.
`data.pkl` may not exceed MAX_PICKLE_BYTES, and the compressed entries together may not inflate
beyond `linearcnn._npz.check_inflation`.
"""

from __future__ import annotations

import argparse
import functools
import io
import pickle
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from linearcnn._npz import check_inflation
from linearcnn.checkpoints._metadata import SAFE_GLOBALS, MetadataRefused
from linearcnn.checkpoints._safe_unpickle import MAX_PICKLE_BYTES
from linearcnn.errors import LinearCNNInputError

#: Extra classes `weights_only` may rebuild: `torch.__version__` is a `TorchVersion` (a plain
#: `str` subclass) and lands in many checkpoints' metadata by accident.
_HARMLESS_GLOBALS: tuple[type, ...] = (torch.torch_version.TorchVersion,)

_BOILERPLATE = (
    "Weights only load failed",
    "Please file an issue",
    "Check the documentation",
    "In PyTorch 2.6",
    "(1)",
    "(2)",
)


def _short(message: str) -> str:
    """The informative line of a (multi-line) library error message, without torch's boilerplate."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return (useful or lines or ["no details"])[0][:200]


#: What safe loading does rebuild, for the refusal messages.
_REBUILT = (
    "tensors, containers, numbers, strings and inert metadata such as argparse.Namespace, pathlib paths, "
    "numpy values and datetimes"
)


@functools.cache
def _safe_globals() -> tuple[Any, ...]:
    """What `weights_only` may rebuild beyond torch's own types: `_HARMLESS_GLOBALS` and, where this
    torch takes `(object, "name")` pairs (checked once by loading a small Namespace through them),
    `SAFE_GLOBALS`; an older torch keeps refusing the metadata instead of failing on every file."""
    everything: tuple[Any, ...] = (*_HARMLESS_GLOBALS, *SAFE_GLOBALS)
    buffer = io.BytesIO()
    torch.save({"args": argparse.Namespace(check=1)}, buffer)
    buffer.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(list(everything)):
                loaded = torch.load(buffer, map_location="cpu", weights_only=True)
        works = vars(loaded["args"]) == {"check": 1}
    except Exception:  # this torch does not take (object, name) pairs
        works = False
    return everything if works else _HARMLESS_GLOBALS


def _refusal(path: Path, global_name: str) -> LinearCNNInputError:
    """Error for a pickle that needs a Python object safe loading does not rebuild."""
    if "." not in global_name:  # torch's message drops the module of builtins: `getattr`, `eval`
        global_name = f"builtins.{global_name}"
    last = global_name.rsplit(".", 1)[-1]
    if last[:1].isupper():  # a class: often a whole model saved with torch.save(model)
        return LinearCNNInputError(
            f"checkpoint {str(path)!r} holds a pickled Python object of class {global_name}, which safe loading "
            f"refuses because unpickling it would run code from the file (it rebuilds only {_REBUILT}); if it is "
            "a whole model saved with torch.save(model), load it in Python and save model.state_dict(), or pass "
            "unsafe_load if you trust the file",
            parameter="unsafe_load",
        )
    return LinearCNNInputError(
        f"checkpoint {str(path)!r} refused: unpickling it would call {global_name}, which safe loading "
        "(torch.load weights_only=True) never runs; pass unsafe_load only if you trust the file",
        parameter="unsafe_load",
    )


def check_zip_checkpoint(path: Path) -> None:
    """LinearCNNInputError when the zip-format checkpoint at `path` has a `data.pkl` over
    MAX_PICKLE_BYTES or compressed entries that would inflate beyond `check_inflation`; a file that
    is not a zip (legacy format) or not a readable one is left to torch."""
    where = f"checkpoint {str(path)!r}"
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                return
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return  # torch reports it
    for info in entries:
        if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise LinearCNNInputError(
                f"{where}: {info.filename} is {info.file_size:,} bytes; expected at most {MAX_PICKLE_BYTES:,} "
                "for a torch.save file's structure (its weights are stored beside it)"
            )
    compressed = [info for info in entries if info.compress_type != zipfile.ZIP_STORED]
    check_inflation(where, sum(info.file_size for info in compressed), sum(info.compress_size for info in compressed))


def torch_load_raw(path: Path, *, unsafe_load: bool, mmap: bool) -> Any:
    """`torch.load` on the CPU (`weights_only` unless `unsafe_load`), torch's warnings silenced;
    errors as torch raises them, except `check_zip_checkpoint`'s LinearCNNInputError."""
    check_zip_checkpoint(path)
    source: Path | io.BytesIO = path
    if not zipfile.is_zipfile(path) and path.stat().st_size <= MAX_PICKLE_BYTES:
        # A legacy pickle read from a file object lets a damaged length field make the reader
        # allocate that many bytes before finding the file shorter; from memory it cannot.
        source = io.BytesIO(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.serialization.safe_globals(list(_safe_globals())):
            return torch.load(source, map_location="cpu", weights_only=not unsafe_load, mmap=mmap and source is path)


def torch_load(path: Path, *, unsafe_load: bool, zip_format: bool) -> Any:
    """`torch.load` on the CPU, `weights_only=True` unless `unsafe_load`; errors become one line.

    Zip-format files are memory-mapped (only the tensors used are read from disk); if mapping
    fails (an archive rewritten with compression, say) a safe load is retried without it.
    """
    try:
        try:
            return torch_load_raw(path, unsafe_load=unsafe_load, mmap=zip_format)
        except (RuntimeError, ValueError):
            if (
                not zip_format or unsafe_load
            ):  # an unsafe load may have run code: never run it twice
                raise
            return torch_load_raw(path, unsafe_load=unsafe_load, mmap=False)
    except LinearCNNInputError:
        raise
    except MemoryError:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r} declares more data than memory allows; truncated or corrupt?"
        ) from None
    except MetadataRefused as exc:  # a stand-in's check failed: nothing named by the file was called
        reason = " ".join(str(exc).split())
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: {reason}; safe loading rebuilds only {_REBUILT}, and nothing from the "
            "file was run; pass unsafe_load only if you trust the file",
            parameter="unsafe_load",
        ) from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found and not unsafe_load:
            raise _refusal(path, found.group(1)) from None
        advice = (
            "truncated or corrupt?"
            if unsafe_load
            else "truncated or corrupt, or not a torch.save file; if it is one and you trust it, "
            "pass unsafe_load"
        )
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: unpickling failed ({_short(str(exc))}): {advice}",
            parameter=None if unsafe_load else "unsafe_load",
        ) from None
    except Exception as exc:  # any failure to parse a user's file is bad input
        hint = " (with unsafe_load its classes must be importable)" if unsafe_load else ""
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: cannot load as a PyTorch checkpoint, truncated or corrupt? "
            f"{type(exc).__name__}: {_short(str(exc))}{hint}",
            parameter="unsafe_load" if unsafe_load else None,
        ) from None


__all__ = ["MAX_PICKLE_BYTES", "check_zip_checkpoint", "torch_load", "torch_load_raw"]

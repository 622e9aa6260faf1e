"""Recognising a checkpoint's format from its content (the suffix is only a last hint).

| first bytes / content                                   | kind           |
|---------------------------------------------------------|----------------|
| zip with `constants.pkl` or a `code/` folder            | `torchscript`  |
| zip with `data.pkl` (torch.save, format since 1.6)      | `torch-zip`    |
| zip whose entries are all `*.npy`                       | `npz`          |
| `\\x93NUMPY`                                            | `npy`          |
| pickle protocol 2-5 opcode (`\\x80\\x02`..`\\x80\\x05`) | `torch-legacy` |
| 8-byte little-endian length n, then `{` (JSON header)   | `safetensors`  |
| protobuf field 1 varint (`\\x08`, ONNX `ir_version`), or suffix `.onnx` | `onnx` |
| zip with `model.weights.h5` (Keras 3 `.keras`)          | `keras`        |
| `\\x89HDF\\r\\n\\x1a\\n` (HDF5: Keras `.h5` / `.weights.h5`)     | `keras-h5`     |
| a folder holding one of `HF_WEIGHT_FILES`               | `huggingface`  |
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from linearcnn._files import check_regular_file
from linearcnn.errors import LinearCNNInputError

#: The weights files of a Hugging Face `save_pretrained` folder, in order of preference.
HF_WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: The first bytes of an HDF5 file (at offset 0: no user block).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The path as a `Path`, after checking it names an existing, non-empty file or a Hugging Face
    model folder (one holding one of `HF_WEIGHT_FILES`)."""
    target = Path(path)
    if not target.exists():
        raise LinearCNNInputError(
            f"checkpoint {str(target)!r} does not exist; expected a checkpoint file"
        )
    if target.is_dir():
        if any((target / name).is_file() for name in HF_WEIGHT_FILES):
            return target
        raise LinearCNNInputError(
            f"checkpoint {str(target)!r} is a directory without model.safetensors, model.safetensors.index.json "
            "or pytorch_model.bin; expected a checkpoint file or a Hugging Face model folder"
        )
    check_regular_file(target, "checkpoint", "a checkpoint file")
    if target.stat().st_size == 0:
        raise LinearCNNInputError(
            f"checkpoint {str(target)!r} is empty (0 bytes); expected a checkpoint file"
        )
    return target


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception as exc:  # any failure to parse a user's file is bad input (NotImplementedError: "zip file version 20.1")
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: zip archive is truncated or corrupt ({type(exc).__name__}: {str(exc)[:160]}); "
            "expected a complete file"
        ) from None
    if any(n.endswith("constants.pkl") or n.startswith("code/") or "/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if "model.weights.h5" in names:
        return "keras"
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    raise LinearCNNInputError(
        f"checkpoint {str(path)!r}: zip archive with entries [{shown}] is not a PyTorch checkpoint "
        "(data.pkl), TorchScript archive (constants.pkl, code/), .npz or .keras (model.weights.h5)"
    )


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def sniff_format(path: Path) -> str:
    """The kind of file at `path` (see the module table); raises for unknown content."""
    if path.is_dir():
        return "huggingface"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(HDF5_MAGIC):
        return "keras-h5"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch-legacy"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x08" or path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".safetensors" and len(head) >= 8:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: safetensors header is truncated or corrupt; expected an "
            "8-byte length followed by a JSON header"
        )
    raise LinearCNNInputError(
        f"checkpoint {str(path)!r}: unknown format (first bytes {head[:8].hex(' ')}); expected a PyTorch "
        "checkpoint, TorchScript archive, safetensors, ONNX, .npy, .npz, .keras or Keras .h5 file"
    )

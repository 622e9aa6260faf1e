"""The fuzzing harness's writing side: a valid small file of every kind the library reads, and the
mutations applied to it.

`KINDS` maps a kind name to (target, builder): the builder writes a valid input into a folder and
returns (the path the target reads, the files in it that mutations may touch). A mutation is a
list of primitive operations (`apply_ops`), applied to one of those files, or, for a zip archive,
to one member (rewritten with a correct CRC, so the reader gets past the checksum) or to the
decompressed content of a `.gz` file.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

RNG = np.random.default_rng(2024)
Op = tuple[Any, ...]

# --------------------------------------------------------------------------- mutations

#: Values that hit length fields and bounds: 0, 1, -1, 2^7.., 2^31, 2^32 - 1, 2^63.
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1, (1 << 64) - 1)


def apply_ops(data: bytes, ops: list[Op]) -> bytes:
    """`data` after each operation of `ops` in turn (positions are taken modulo the length):

    ("flip", pos, mask)          xor one byte with mask (1..255)
    ("truncate", pos)            keep the first pos bytes
    ("insert", pos, blob)        insert blob at pos
    ("delete", pos, n)           remove n bytes at pos
    ("overwrite", pos, blob)     overwrite from pos with blob
    ("number", pos, width, v, big_endian)  overwrite with the integer v (an INTERESTING value)
    ("replace", blob)            the whole content becomes blob
    """
    out = bytearray(data)
    for op in ops:
        kind, size = op[0], max(len(out), 1)
        if kind == "flip" and out:
            out[op[1] % size] ^= op[2]
        elif kind == "truncate":
            del out[op[1] % size:]
        elif kind == "insert":
            at = op[1] % (len(out) + 1)
            out[at:at] = op[2]
        elif kind == "delete":
            at = op[1] % size
            del out[at:at + op[2]]
        elif kind == "overwrite":
            at = op[1] % size
            out[at:at + len(op[2])] = op[2]
        elif kind == "number":
            _, pos, width, value, big = op
            blob = (value % (1 << (8 * width))).to_bytes(width, "big" if big else "little")
            at = pos % size
            out[at:at + width] = blob
        elif kind == "replace":
            out = bytearray(op[1])
    return bytes(out)


def mutate_file(path: Path, where: tuple[str, int], ops: list[Op]) -> str:
    """Apply `ops` to the file at `path` in place, at the level `where` names: ("bytes", _) the raw
    file, ("member", i) the i-th member of a zip archive, ("gunzip", _) a gzip file's content.
    Returns a description of what was touched, for failure messages."""
    data = path.read_bytes()
    level, index = where
    if level == "member" and zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as old:
            infos = old.infolist()
            chosen = infos[index % len(infos)]
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as new:
                for info in infos:
                    content = old.read(info)
                    new.writestr(info, apply_ops(content, ops) if info is chosen else content)
        path.write_bytes(buffer.getvalue())
        return f"{path.name} member {chosen.filename!r}"
    if level == "gunzip" and data[:2] == b"\x1f\x8b":
        path.write_bytes(gzip.compress(apply_ops(gzip.decompress(data), ops), mtime=0))
        return f"{path.name} (decompressed content)"
    path.write_bytes(apply_ops(data, ops))
    return path.name


# --------------------------------------------------------------------------- valid inputs


def _weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "stem.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "stem.bias": torch.randn(4, generator=generator),
        "head.weight": torch.randn(2, 4, 1, 1, generator=generator),
    }


def _torch_zip(folder: Path) -> Path:
    torch.save(_weights(), folder / "ckpt.pt")
    return folder / "ckpt.pt"


def _torch_legacy(folder: Path) -> Path:
    torch.save(_weights(), folder / "ckpt.pt", _use_new_zipfile_serialization=False)
    return folder / "ckpt.pt"


_SCRIPTED: list[bytes] = []


def _torchscript(folder: Path) -> Path:
    if not _SCRIPTED:  # scripting takes a second: once per session
        torch.manual_seed(0)
        model = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)))
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        _SCRIPTED.append(buffer.getvalue())
    (folder / "model.pt").write_bytes(_SCRIPTED[0])
    return folder / "model.pt"


def _npz(folder: Path) -> Path:
    arrays = {key: value.numpy() for key, value in _weights().items()}
    np.savez(folder / "w.npz", **arrays, initial_weight=arrays["stem.weight"] * 0.5)
    return folder / "w.npz"


def _npy(folder: Path) -> Path:
    np.save(folder / "w.npy", _weights()["stem.weight"].numpy())
    return folder / "w.npy"


def _safetensors(folder: Path) -> Path:
    from safetensors.torch import save_file

    save_file(_weights(), str(folder / "w.safetensors"))
    return folder / "w.safetensors"


def _onnx(folder: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    weights = {key: value.numpy() for key, value in _weights().items()}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "stem.weight", "stem.bias"], ["s"], name="stem_conv"),
         helper.make_node("Relu", ["s"], ["r"]),
         helper.make_node("Conv", ["r", "head.weight"], ["Y"], name="head_conv")],
        "fuzz",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2, 6, 6])],
        initializer=[numpy_helper.from_array(value, key) for key, value in weights.items()],
    )
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _stats(folder: Path) -> Path:
    from linearcnn.patches import patch_stats

    stats = patch_stats(torch.from_numpy(RNG.random((3, 3, 6, 6), dtype=np.float32)), 3)
    stats.save(folder / "stats.npz")
    return folder / "stats.npz"


def _uint8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _data_npz(folder: Path) -> Path:
    np.savez(folder / "data.npz", images=_uint8(4, 6, 6, 3), labels=np.arange(4) % 2, test_images=_uint8(2, 6, 6, 3),
             test_labels=np.array([1, 0]), classes=np.array(["a", "b"]))
    return folder / "data.npz"


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _mnist(folder: Path, compress: bool) -> Path:
    root = folder / "mnist"
    root.mkdir()
    for prefix, count in (("train", 4), ("t10k", 2)):
        for kind, array in (("images-idx3", _uint8(count, 5, 6)), ("labels-idx1", (np.arange(count) % 10).astype(np.uint8))):
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(_idx(array), mtime=0))
            else:
                (root / name).write_bytes(_idx(array))
    return root


def _cifar_batch(count: int, label_key: bytes) -> bytes:
    return pickle.dumps({b"batch_label": b"batch", label_key: [int(v) for v in RNG.integers(0, 10, count)],
                         b"data": _uint8(count, 3072)}, protocol=2)


def _cifar10(folder: Path) -> Path:
    root = folder / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(_cifar_batch(1, b"labels"))
    (root / "test_batch").write_bytes(_cifar_batch(1, b"labels"))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2))
    return root


def _cifar100(folder: Path) -> Path:
    root = folder / "cifar-100-python"
    root.mkdir()
    (root / "train").write_bytes(_cifar_batch(2, b"fine_labels"))
    (root / "test").write_bytes(_cifar_batch(1, b"fine_labels"))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, protocol=2))
    return root


def _folder(folder: Path) -> Path:
    from PIL import Image

    root = folder / "images"
    for name, shape in (("cat/a.png", (6, 6, 3)), ("cat/b.png", (6, 6, 3)), ("dog/c.png", (6, 6)), ("dog/d.png", (8, 6, 3))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_uint8(*shape)).save(root / name)
    return root


def _svhn(folder: Path) -> Path:
    import scipy.io

    root = folder / "svhn"
    root.mkdir()
    for split, count in (("train", 3), ("test", 2)):
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": _uint8(6, 6, 3, count), "y": np.arange(1, count + 1)[:, None]})
    return root


Builder = Callable[[Path], Path]

#: kind -> (worker target, builder). The builder writes a valid input into an empty folder and
#: returns the path the target reads (a file, or the data set's folder).
KINDS: dict[str, tuple[str, Builder]] = {
    "torch-zip": ("checkpoint", _torch_zip),
    "torch-legacy": ("checkpoint", _torch_legacy),
    "torchscript": ("checkpoint", _torchscript),
    "npz": ("checkpoint", _npz),
    "npy": ("checkpoint", _npy),
    "safetensors": ("checkpoint", _safetensors),
    "onnx": ("checkpoint", _onnx),
    "stats": ("stats", _stats),
    "data-npz": ("data:npz", _data_npz),
    "mnist-raw": ("data:mnist", lambda folder: _mnist(folder, compress=False)),
    "mnist-gz": ("data:mnist", lambda folder: _mnist(folder, compress=True)),
    "cifar10": ("data:cifar10", _cifar10),
    "cifar100": ("data:cifar100", _cifar100),
    "folder-png": ("data:folder", _folder),
    "svhn": ("data:svhn", _svhn),
}

#: The kinds stored as zip archives (member-level mutations apply) and as gzip files.
ZIPPED = {"torch-zip", "torchscript", "npz", "stats", "data-npz"}
GZIPPED = {"mnist-gz"}


def files_of(root: Path) -> list[Path]:
    """The files a mutation may touch: `root` itself, or every file under the folder `root`."""
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())

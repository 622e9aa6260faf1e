"""CIFAR-10 and CIFAR-100 python batches (`cifar10:DIR`, `cifar100:DIR`), read by an unpickler that
builds plain containers and numpy arrays only: a data file cannot run code.

Memory is bounded too: arrays are built from bytes the file holds (numpy checks their declared
shape against them), only the batches `--limit` needs are read, and a pickle is refused before it
is unpickled when it has more than MAX_PICKLE_OPS opcodes (each can build an object, up to ~70
times the byte it takes: a 4 MB pickle of empty dicts took 350 MB)."""

from __future__ import annotations

import importlib
import pickle
import pickletools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from linearcnn.data._dataset import to_unit_float
from linearcnn.data.formats._common import Loaded, check_dir, find_folder, limited
from linearcnn.errors import LinearCNNInputError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip



#: Most pickle opcodes in one batch file: a CIFAR-100 batch has about four per image (a label of
#: each kind, a file name and its memo entry: ~250k for the train batch); 2**20 leaves room.
MAX_PICKLE_OPS = 2**20


def _count_ops(handle: Any, path: Path, kind: str) -> None:
    """Refuse a pickle of more than MAX_PICKLE_OPS opcodes (read, not executed, by pickletools)."""
    for count, _ in enumerate(pickletools.genops(handle), start=1):
        if count > MAX_PICKLE_OPS:
            raise LinearCNNInputError(
                f"{kind} file {str(path)!r} holds more than {MAX_PICKLE_OPS:,} pickle opcodes; expected a CIFAR python batch"
            )
    handle.seek(0)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),  # arrays in pickle protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (only arrays and lists are allowed)"
            )
        if module.startswith("numpy.") and module != "numpy":
            submodule = module.rsplit(".", 1)[1]  # numpy.core.X and numpy._core.X: same X
            try:
                found = importlib.import_module(f"numpy._core.{submodule}")
            except ImportError:  # numpy < 2
                found = importlib.import_module(f"numpy.core.{submodule}")
            return getattr(found, name)
        return super().find_class(module, name)


def _read_pickle(path: Path, kind: str) -> dict[str, Any]:
    """A CIFAR python batch as a dict with str keys (the files use bytes keys)."""
    try:
        with path.open("rb") as handle:
            _count_ops(handle, path, kind)
            content = _SafeUnpickler(handle, encoding="bytes").load()
    except LinearCNNInputError:
        raise
    except OSError as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} cannot be read ({exc.strerror or exc})"
        ) from None
    except Exception as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} is not a readable CIFAR python batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(content, dict):
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} holds a {type(content).__name__}; expected a dict"
        )
    return {
        key.decode("latin1") if isinstance(key, bytes) else str(key): value
        for key, value in content.items()
    }


def _names(value: Any, path: Path, kind: str, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r}: {key!r} is a {type(value).__name__}; expected a list of names"
        )
    try:
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in value]
    except UnicodeDecodeError as exc:
        raise LinearCNNInputError(f"{kind} file {str(path)!r}: a name in {key!r} is not UTF-8 text ({exc.reason})") from None


def _cifar_batch(
    path: Path, kind: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch: uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    batch = _read_pickle(path, kind)
    for key in ("data", label_key):
        if key not in batch:
            raise LinearCNNInputError(
                f"{kind} file {str(path)!r} has keys {sorted(batch)}; expected 'data' and {label_key!r}"
            )
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)"
        )
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r}: {label_key!r} is not a list of integers"
        ) from None
    if labels.shape[0] != data.shape[0]:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r}: {labels.shape[0]} labels for {data.shape[0]} images; expected one per image"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r}: labels span [{labels.min()}, {labels.max()}]; expected 0..{num_classes - 1}"
        )
    return data.reshape(-1, 3, 32, 32), labels  # rows are R(1024) G(1024) B(1024), row-major 32x32


_CIFAR10_EXPECTED = (
    "data_batch_1..5, test_batch and batches.meta (cifar-10-batches-py or its parent)"
)
_CIFAR100_EXPECTED = "train, test and meta (cifar-100-python or its parent)"


def _cifar10_folders(root: Path) -> list[Path]:
    return [root, root / "cifar-10-batches-py"]


def _cifar100_folders(root: Path) -> list[Path]:
    return [root, root / "cifar-100-python"]


def load_cifar10(root: Path, *, train: bool, limit: int | None) -> Loaded:
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    folder = find_folder(root, "cifar10", _cifar10_folders(root), names, _CIFAR10_EXPECTED)
    classes = list(CIFAR10_CLASSES)
    if (folder / "batches.meta").is_file():
        meta = _read_pickle(folder / "batches.meta", "cifar10")
        if "label_names" in meta:
            classes = _names(meta["label_names"], folder / "batches.meta", "cifar10", "label_names")
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    have = 0
    for name in names:
        if limit is not None and have >= limit:
            break
        batch_images, batch_labels = _cifar_batch(folder / name, "cifar10", "labels", len(classes))
        images.append(batch_images)
        labels.append(batch_labels)
        have += batch_images.shape[0]
    count = limited(have, limit)
    pixels = np.concatenate(images)[:count]  # (N, 3, 32, 32) uint8
    split = "train" if train else "test"
    return (
        to_unit_float(pixels, "cifar10"),
        np.concatenate(labels)[:count],
        classes,
        f"CIFAR-10 {split} split from {folder}",
    )


def load_cifar100(root: Path, *, train: bool, limit: int | None) -> Loaded:
    name = "train" if train else "test"
    folder = find_folder(root, "cifar100", _cifar100_folders(root), [name], _CIFAR100_EXPECTED)
    classes = [str(i) for i in range(100)]
    if (folder / "meta").is_file():
        meta = _read_pickle(folder / "meta", "cifar100")
        if "fine_label_names" in meta:
            classes = _names(
                meta["fine_label_names"], folder / "meta", "cifar100", "fine_label_names"
            )
    pixels, labels = _cifar_batch(folder / name, "cifar100", "fine_labels", len(classes))
    count = limited(pixels.shape[0], limit)
    return (
        to_unit_float(pixels[:count], "cifar100"),
        labels[:count],
        classes,
        f"CIFAR-100 {name} split (fine labels) from {folder}",
    )



def has_test_split(root: Path, kind: str) -> bool:
    """Whether the CIFAR folder `root` (or the folder the archive unpacks to) holds the test batch."""
    if kind == "cifar10":
        check_dir(root, kind, _CIFAR10_EXPECTED)
        return any((folder / "test_batch").is_file() for folder in _cifar10_folders(root))
    check_dir(root, kind, _CIFAR100_EXPECTED)
    return any((folder / "test").is_file() for folder in _cifar100_folders(root))


__all__ = ["CIFAR10_CLASSES", "has_test_split", "load_cifar10", "load_cifar100"]

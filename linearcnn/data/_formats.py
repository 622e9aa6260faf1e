"""Loaders for the on-disk formats: CIFAR-10/100 pickles, SVHN .mat, MNIST-like IDX, image
folders and .npz files.

Each loader returns `(images, labels, classes, description)` with images float32 (N, C, H, W) in
[0, 1] (see `to_unit_float`), labels int64 (N,) or None, and reads only what the split and the
`limit` (first N images) need where the format allows it. Every way a file can be missing,
misplaced, malformed or inconsistent ends in a one-line `LinearCNNInputError`, and so does asking
for a test split the data does not have (never a silent fallback to the training images).
`has_test_files` says whether a spec's test split is there, listing files and npz keys only.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from linearcnn.data._dataset import to_unit_float
from linearcnn.errors import LinearCNNInputError

Loaded = tuple[np.ndarray, "np.ndarray | None", list[str], str]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

#: File suffixes the folder loader reads (case-insensitive); other files are ignored.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


# --------------------------------------------------------------------------- paths


def _check_dir(path: Path, kind: str, expected: str) -> None:
    if not path.exists():
        raise LinearCNNInputError(
            f"{kind} folder {str(path)!r} does not exist; expected {expected}"
        )
    if not path.is_dir():
        raise LinearCNNInputError(
            f"{kind} path {str(path)!r} is a file; expected a folder with {expected}"
        )


def _check_file(path: Path, kind: str, expected: str) -> None:
    if not path.exists():
        raise LinearCNNInputError(f"{kind} file {str(path)!r} does not exist; expected {expected}")
    if path.is_dir():
        raise LinearCNNInputError(f"{kind} path {str(path)!r} is a folder; expected {expected}")


def _find_folder(
    root: Path, kind: str, candidates: list[Path], needed: list[str], expected: str
) -> Path:
    """The first of `candidates` that holds every file in `needed`; else name what is missing."""
    _check_dir(root, kind, expected)
    best: tuple[int, Path, list[str]] | None = None
    for folder in candidates:
        if not folder.is_dir():
            continue
        for name in needed:
            if (folder / name).is_dir():
                raise LinearCNNInputError(
                    f"{kind} path {str(folder / name)!r} is a folder; expected a file"
                )
        missing = [name for name in needed if not (folder / name).is_file()]
        if not missing:
            return folder
        if best is None or len(missing) < len(best[2]):
            best = (len(missing), folder, missing)
    looked = " and ".join(repr(str(folder)) for folder in candidates)
    missing = best[2] if best is not None else needed
    raise LinearCNNInputError(
        f"{kind} folder {str(root)!r} lacks {', '.join(missing)} (looked in {looked})"
    )


def _limited(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


# --------------------------------------------------------------------------- CIFAR


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
            content = _SafeUnpickler(handle, encoding="bytes").load()
    except OSError as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} cannot be read ({exc.strerror or exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001  (any parse failure of a user file is bad input)
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
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in value]


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
    folder = _find_folder(root, "cifar10", _cifar10_folders(root), names, _CIFAR10_EXPECTED)
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
    count = _limited(have, limit)
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
    folder = _find_folder(root, "cifar100", _cifar100_folders(root), [name], _CIFAR100_EXPECTED)
    classes = [str(i) for i in range(100)]
    if (folder / "meta").is_file():
        meta = _read_pickle(folder / "meta", "cifar100")
        if "fine_label_names" in meta:
            classes = _names(
                meta["fine_label_names"], folder / "meta", "cifar100", "fine_label_names"
            )
    pixels, labels = _cifar_batch(folder / name, "cifar100", "fine_labels", len(classes))
    count = _limited(pixels.shape[0], limit)
    return (
        to_unit_float(pixels[:count], "cifar100"),
        labels[:count],
        classes,
        f"CIFAR-100 {name} split (fine labels) from {folder}",
    )


# --------------------------------------------------------------------------- SVHN


_SVHN_EXPECTED = "train_32x32.mat and test_32x32.mat"


def load_svhn(root: Path, *, train: bool, limit: int | None) -> Loaded:
    import scipy.io

    name = "train_32x32.mat" if train else "test_32x32.mat"
    folder = _find_folder(root, "svhn", [root], [name], _SVHN_EXPECTED)
    path = folder / name
    try:
        content = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} cannot be read by scipy ({exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001  (any parse failure of a user file is bad input)
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} is not a readable .mat file ({type(exc).__name__}: {exc})"
        ) from None
    if "X" not in content or "y" not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise LinearCNNInputError(
            f"svhn file {str(path)!r} has variables {found}; expected 'X' and 'y'"
        )
    pixels = np.asarray(content["X"])
    if pixels.ndim != 4 or pixels.shape[2] != 3:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: X has shape {pixels.shape}; expected (H, W, 3, N)"
        )
    labels = np.asarray(content["y"]).reshape(-1)
    if labels.shape[0] != pixels.shape[3]:
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: {labels.shape[0]} labels for {pixels.shape[3]} images; expected one per image"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise LinearCNNInputError(
            f"svhn file {str(path)!r}: labels span [{labels.min()}, {labels.max()}]; expected 1..10"
        )
    count = _limited(pixels.shape[3], limit)
    pixels = pixels[..., :count].transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    images = to_unit_float(pixels, "svhn")
    digits = np.where(labels[:count] == 10, 0, labels[:count])  # label 10 stands for the digit 0
    split = "train" if train else "test"
    return (
        np.ascontiguousarray(images),
        digits,
        [str(d) for d in range(10)],
        f"SVHN {split} split (cropped digits) from {folder}",
    )


# --------------------------------------------------------------------------- MNIST-like IDX

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, kind: str = "mnist") -> np.ndarray:
    """An IDX file (raw, or gzip when the name ends in .gz) as a native-endian numpy array."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()!r})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LinearCNNInputError(f"{kind} file {str(path)!r} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise LinearCNNInputError(
            f"{kind} file {str(path)!r} holds {len(raw) - header} data bytes; its header {tuple(dims)} "
            f"needs {expected} (truncated or corrupt)"
        )
    array = np.frombuffer(
        raw, dtype=dtype, count=expected // dtype.itemsize, offset=header
    ).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem_variants: list[str]) -> Path | None:
    for stem in stem_variants:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


_MNIST_EXPECTED = "IDX files such as train-images-idx3-ubyte[.gz]"


def _mnist_stems(train: bool) -> tuple[list[str], list[str]]:
    """The accepted names (without .gz) of a split's image and label files."""
    prefix = "train" if train else "t10k"
    image_stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    label_stems = [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]
    return image_stems, label_stems


def _mnist_files(root: Path, train: bool) -> tuple[Path, Path] | None:
    """The split's (image, label) IDX files in DIR or DIR/raw, or None where either is missing."""
    image_stems, label_stems = _mnist_stems(train)
    for folder in (root, root / "raw"):
        if folder.is_dir():
            image_path, label_path = _idx_file(folder, image_stems), _idx_file(folder, label_stems)
            if image_path is not None and label_path is not None:
                return image_path, label_path
    return None


def load_mnist(root: Path, *, train: bool, limit: int | None) -> Loaded:
    _check_dir(root, "mnist", _MNIST_EXPECTED)
    found = _mnist_files(root, train)
    if found is None:
        image_stems, label_stems = _mnist_stems(train)
        raise LinearCNNInputError(
            f"mnist folder {str(root)!r} lacks {image_stems[0]}[.gz] and {label_stems[0]}[.gz] "
            f"(looked in {str(root)!r} and {str(root / 'raw')!r})"
        )
    image_path, label_path = found
    pixels = read_idx(image_path)
    labels = read_idx(label_path)
    if pixels.ndim != 3:
        raise LinearCNNInputError(
            f"mnist file {str(image_path)!r} has shape {pixels.shape}; expected (N, H, W)"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LinearCNNInputError(
            f"mnist file {str(label_path)!r} has {labels.dtype} {labels.shape}; expected integer (N,)"
        )
    if labels.shape[0] != pixels.shape[0]:
        raise LinearCNNInputError(
            f"mnist files {image_path.name!r} and {label_path.name!r}: {labels.shape[0]} labels for "
            f"{pixels.shape[0]} images; expected one per image"
        )
    if labels.size and labels.min() < 0:
        raise LinearCNNInputError(f"mnist file {str(label_path)!r}: negative label {labels.min()}")
    num_classes = max(10, int(labels.max()) + 1) if labels.size else 10
    count = _limited(pixels.shape[0], limit)
    images = to_unit_float(pixels[:count, None], "mnist")  # (N, 1, H, W)
    split = "train" if train else "test"
    return (
        images,
        labels[:count].astype(np.int64),
        [str(c) for c in range(num_classes)],
        f"MNIST-like {split} split (IDX) from {image_path.parent}",
    )


# --------------------------------------------------------------------------- image folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )  # fmt: skip


def _class_folders(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")
    )


def _picture_array(picture: Any, gray: bool, what: str) -> np.ndarray:
    """A Pillow image as float32 (H, W) (gray) or (H, W, 3) in [0, 1]; 16-bit and float grey
    are read at full precision (and repeated into three channels when the set is in colour)."""
    if picture.mode.startswith("I") or picture.mode == "F":  # 16-bit ("I;16*", "I") or float grey
        samples = np.asarray(picture)
        if picture.mode.startswith("I"):
            if samples.min() < 0 or samples.max() > 65535:
                raise LinearCNNInputError(f"{what}: 32-bit integer pixels outside [0, 65535]")
            samples = samples.astype(np.uint16)
        plane = to_unit_float(samples, what)  # (H, W)
        return plane if gray else np.repeat(plane[..., None], 3, axis=2)
    return to_unit_float(np.asarray(picture.convert("L" if gray else "RGB")), what)


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop float (H, W[, C]) to the aspect ratio of `size` (width, height), then shrink it
    to `size` with Pillow's antialiasing Lanczos filter, per channel in float, clipped to [0, 1]."""
    from PIL import Image

    height, width = image.shape[:2]
    target_w, target_h = size
    if width * target_h > height * target_w:  # too wide: crop the sides
        crop_w, crop_h = round(height * target_w / target_h), height
    else:  # too tall: crop top and bottom
        crop_w, crop_h = width, round(width * target_h / target_w)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    image = image[top : top + crop_h, left : left + crop_w]
    planes = image[..., None] if image.ndim == 2 else image  # (h, w, C)
    planes = np.ascontiguousarray(planes, dtype=np.float32)
    shrunk = [  # float32 planes become Pillow "F" images: no 8-bit rounding on the way
        np.asarray(Image.fromarray(planes[..., c].copy()).resize(size, Image.Resampling.LANCZOS))
        for c in range(planes.shape[2])
    ]  # C x (H, W)
    result = np.clip(np.stack(shrunk, axis=-1), 0.0, 1.0).astype(np.float32)  # (H, W, C)
    return result[..., 0] if image.ndim == 2 else result


def _read_picture(path: Path, size: tuple[int, int], gray: bool) -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1] at `size` (width, height)."""
    from PIL import Image

    what = f"image file {str(path)!r}"
    try:
        with Image.open(path) as picture:
            picture.load()
            image = _picture_array(picture, gray, what)  # (h, w) or (h, w, 3)
    except LinearCNNInputError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # how Pillow reports bad files
        raise LinearCNNInputError(f"{what} cannot be read ({type(exc).__name__}: {exc})") from None
    if image.shape[1::-1] != size:
        image = _shrink(image, size)
    return image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, H, W)


_FOLDER_EXPECTED = "one sub-folder of images per class"


def _folder_splits(root: Path) -> tuple[str, str] | None:
    """The (train, test) sub-folder names when `root` holds `train/` and `test/` (else `val/`)."""
    subfolders = {path.name for path in _class_folders(root)}
    if "train" not in subfolders:
        return None
    if "test" in subfolders:
        return "train", "test"
    if "val" in subfolders:
        return "train", "val"
    return None


def load_folder(root: Path, *, train: bool, limit: int | None) -> Loaded:
    from PIL import Image

    _check_dir(root, "folder", _FOLDER_EXPECTED)
    split_note = ""
    splits = _folder_splits(root)
    class_names: list[str] | None = None  # the test split is labelled by the train split's classes
    if splits is not None:
        split = splits[0] if train else splits[1]
        if not train:
            class_names = [path.name for path in _class_folders(root / splits[0])]
        root, split_note = root / split, f" ({split} split)"
    elif not train:
        raise LinearCNNInputError(
            f"folder {str(root)!r} has no test split; expected 'train' and 'test' (or 'val') "
            f"sub-folders, each with {_FOLDER_EXPECTED}"
        )
    class_dirs = _class_folders(root)
    if not class_dirs:
        raise LinearCNNInputError(
            f"folder {str(root)!r} has no sub-folders; expected {_FOLDER_EXPECTED}"
        )
    if class_names is None:
        class_names = [path.name for path in class_dirs]
    unknown = [path.name for path in class_dirs if path.name not in class_names]
    if unknown:
        raise LinearCNNInputError(
            f"folder {str(root)!r} has class folders {unknown} that the train split lacks; "
            f"expected the test classes to be among {class_names}"
        )
    files: list[tuple[Path, int]] = []
    for class_dir in class_dirs:
        label = class_names.index(class_dir.name)
        found = _image_files(class_dir)
        if not found:
            raise LinearCNNInputError(
                f"class folder {str(class_dir)!r} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
            )
        files.extend((path, label) for path in found)
    files = files[: _limited(len(files), limit)]
    sizes: list[tuple[int, int]] = []
    gray = True
    for path, _ in files:
        try:
            with Image.open(path) as picture:
                sizes.append(picture.size)
                gray = gray and picture.mode in _GRAY_MODES
        except (OSError, SyntaxError, ValueError) as exc:
            raise LinearCNNInputError(
                f"image file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
    counts = Counter(sizes)
    # the most common size; ties go to the size seen first
    common = max(counts, key=lambda size: (counts[size], -sizes.index(size)))
    for (path, _), (width, height) in zip(files, sizes):
        if width < common[0] or height < common[1]:
            raise LinearCNNInputError(
                f"image file {str(path)!r} is {width}x{height}, smaller than the folder's common size "
                f"{common[0]}x{common[1]}; images are only ever shrunk, never enlarged"
            )
    images = np.stack([_read_picture(path, common, gray) for path, _ in files])  # (N, C, H, W)
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    resized = sum(size != common for size in sizes)
    note = f", {resized} resized" if resized else ""
    return (
        images,
        labels,
        class_names,
        f"image folder {root}{split_note}{note}",
    )


# --------------------------------------------------------------------------- npz


def _channel_axis(shape: tuple[int, ...]) -> str:
    """'NHWC' or 'NCHW' for a 4-d images array; last axis wins when both could be channels."""
    if shape[3] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    return ""


#: The two ways to name the train split's arrays (images, labels); `images` is the main one.
_NPZ_TRAIN_KEYS = (("images", "labels"), ("train_images", "train_labels"))
#: The test split's arrays (images, labels).
_NPZ_TEST_KEYS = ("test_images", "test_labels")
_NPZ_EXPECTED = (
    "an .npz file with an 'images' array (NxHxWxC or NxCxHxW), optional 'labels' and 'classes', "
    "and an optional test split 'test_images' / 'test_labels'"
)


def _npz_keys(path: Path) -> list[str]:
    """The array names of an npz file, from its zip directory (no array is read)."""
    _check_file(path, "npz", _NPZ_EXPECTED)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as exc:  # noqa: BLE001  (any parse failure of a user file is bad input)
        raise LinearCNNInputError(
            f"npz file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from None


def _npz_split_keys(path: Path, keys: list[str], train: bool) -> tuple[str, str]:
    """The names of the split's (images, labels) arrays in an npz file with arrays `keys`."""
    if not train:
        if _NPZ_TEST_KEYS[0] not in keys:
            raise LinearCNNInputError(
                f"npz file {str(path)!r} has no test split; expected 'test_images' (and optional "
                f"'test_labels') next to 'images'"
            )
        return _NPZ_TEST_KEYS
    present = [pair for pair in _NPZ_TRAIN_KEYS if pair[0] in keys]
    if not present:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has arrays {keys}; expected 'images' (and optional 'labels')"
        )
    if len(present) > 1:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has both 'images' and 'train_images'; expected one of them"
        )
    images_key, labels_key = present[0]
    other_labels = "train_labels" if labels_key == "labels" else "labels"
    if other_labels in keys:
        raise LinearCNNInputError(
            f"npz file {str(path)!r} has {other_labels!r} beside {images_key!r}; expected "
            f"{labels_key!r} (labels are named like their images: 'labels' with 'images', "
            f"'train_labels' with 'train_images')"
        )
    return images_key, labels_key


def _npz_labels(labels: np.ndarray, path: Path, key: str, num_images: int | None) -> np.ndarray:
    """Checked int64 (N,) class indices from an npz labels array (length checked when
    `num_images` is given)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:  # (N, 1) or (1, N) column/row of labels
        labels = labels.reshape(-1)
    if labels.ndim != 1 or (num_images is not None and labels.shape[0] != num_images):
        expected = "(N,)" if num_images is None else f"({num_images},)"
        images = "" if num_images is None else f" for {num_images} images"
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} has shape {labels.shape}{images}; expected {expected}"
        )
    integral = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)
    whole_floats = (
        np.issubdtype(labels.dtype, np.floating)
        and bool(np.all(np.isfinite(labels)))
        and bool(np.all(labels == np.round(labels)))
    )
    if not (integral or whole_floats):
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} are {labels.dtype}; expected integer class indices"
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {key!r} contain {labels.min()}; expected class indices >= 0"
        )
    return labels


def load_npz(path: Path, *, train: bool, limit: int | None) -> Loaded:
    """The train split (`images`, or `train_images`) or the test split (`test_images`) of an npz
    file, with the split's labels and the file's `classes` (shared by both splits: without
    `classes` the names are "0".."M-1", M = 1 + the largest label of either split)."""
    keys = _npz_keys(path)
    images_key, labels_key = _npz_split_keys(path, keys, train)
    label_keys = [key for key in ("labels", "train_labels", "test_labels") if key in keys]
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = archive[images_key]
            all_labels = {key: archive[key] for key in label_keys}  # labels are small
            names = archive["classes"] if "classes" in keys else None
    except Exception as exc:  # noqa: BLE001  (any parse failure of a user file is bad input)
        raise LinearCNNInputError(
            f"npz file {str(path)!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if raw.ndim == 3:
        raw = raw[..., None]  # (N, H, W) grayscale -> (N, H, W, 1)
    if raw.ndim != 4:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {images_key!r} has shape {raw.shape}; expected NxHxWxC, NxCxHxW or NxHxW"
        )
    layout = _channel_axis(raw.shape)
    if not layout:
        raise LinearCNNInputError(
            f"npz file {str(path)!r}: {images_key!r} has shape {raw.shape}; expected 1 or 3 channels as the "
            f"last (NxHxWxC) or second (NxCxHxW) axis"
        )
    count = _limited(raw.shape[0], limit)
    pixels = raw[:count].transpose(0, 3, 1, 2) if layout == "NHWC" else raw[:count]  # (N, C, H, W)
    images = np.ascontiguousarray(to_unit_float(pixels, f"npz file {str(path)!r}"))
    checked = {  # every labels array of the file is checked, whichever split is read
        key: _npz_labels(value, path, key, raw.shape[0] if key == labels_key else None)
        for key, value in all_labels.items()
    }
    classes: list[str] = []
    labels = checked.get(labels_key)
    if labels is not None:
        num_classes = max((int(v.max()) + 1 for v in checked.values() if v.size), default=0)
        if names is not None:
            classes = [str(name) for name in np.asarray(names).reshape(-1)]
            if len(classes) < num_classes:
                raise LinearCNNInputError(
                    f"npz file {str(path)!r}: {len(classes)} 'classes' names for labels up to {num_classes - 1}"
                )
        else:
            classes = [str(c) for c in range(num_classes)]
        labels = labels[:count]
    split = "" if _NPZ_TEST_KEYS[0] not in keys else ("train split, " if train else "test split, ")
    return images, labels, classes, f"npz file {path} ({split}{layout})"


# --------------------------------------------------------------------------- test splits


def has_test_files(kind: str, path: Path) -> bool:
    """Whether the data set `kind` at `path` (not builtin) has its test split on disk.

    Only names are looked at (files, sub-folders, an npz file's array list), nothing is parsed,
    so a True does not promise the files are well formed. A `path` that is missing or of the
    wrong type (a file where a folder is expected, or the reverse), or an npz file that is not a
    zip archive, raises the LinearCNNInputError the loader would raise.
    """
    if kind == "npz":
        return _NPZ_TEST_KEYS[0] in _npz_keys(path)
    expected = {
        "cifar10": _CIFAR10_EXPECTED,
        "cifar100": _CIFAR100_EXPECTED,
        "svhn": _SVHN_EXPECTED,
        "mnist": _MNIST_EXPECTED,
        "folder": _FOLDER_EXPECTED,
    }
    if kind not in expected:
        raise LinearCNNInputError(
            f"data kind {kind!r}: expected one of {', '.join(expected)} or npz"
        )
    _check_dir(path, kind, expected[kind])
    if kind == "cifar10":
        return any((folder / "test_batch").is_file() for folder in _cifar10_folders(path))
    if kind == "cifar100":
        return any((folder / "test").is_file() for folder in _cifar100_folders(path))
    if kind == "svhn":
        return (path / "test_32x32.mat").is_file()
    if kind == "mnist":
        return _mnist_files(path, train=False) is not None
    return _folder_splits(path) is not None

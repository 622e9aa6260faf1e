"""A folder of images (`folder:DIR`): one sub-folder per class, optional train/ and test/ (or val/)
splits, or a flat folder of images (unlabelled); images centre-cropped and shrunk to the most
common size, never enlarged, or with `image_size` N each resized (short side N) and centre-cropped
to N x N; `channels` 1 or 3 converts them. Only the first `limit` files are opened, each by
`open_picture` (sizes checked from the headers first)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn.data._dataset import LUMA_WEIGHTS, resize_center_crop, to_unit_float
from linearcnn.data.formats._common import Loaded, check_dir, limited, open_picture
from linearcnn.errors import LinearCNNInputError

#: File suffixes the folder loader reads (case-insensitive); other files are ignored.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


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


def _as_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) by `LUMA_WEIGHTS`; (H, W) unchanged."""
    if image.ndim == 2:
        return image
    return np.clip(image @ np.asarray(LUMA_WEIGHTS, dtype=np.float32), 0.0, 1.0).astype(np.float32)


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


def _read_picture(path: Path, size: tuple[int, int] | int, gray: bool) -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1] at `size`: (width, height) for the folder's
    common size, or an int N for `resize_center_crop` to N x N."""
    what = f"image file {str(path)!r}"
    with open_picture(path, what) as picture:  # its size checked before it is decoded
        picture.load()
        image = _picture_array(picture, gray, what)  # (h, w) or (h, w, 3)
    if gray:
        image = _as_gray(image)  # a 16-bit grey plane read in colour mode stays (h, w)
    if isinstance(size, int):
        planes = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, h, w)
        return resize_center_crop(planes, size)
    if image.shape[1::-1] != size:
        image = _shrink(image, size)
    return image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, H, W)


_FOLDER_EXPECTED = "one sub-folder of images per class, or images directly in it"


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


def load_folder(
    root: Path, *, train: bool, limit: int | None, image_size: int | None = None, channels: int | None = None
) -> Loaded:
    check_dir(root, "folder", _FOLDER_EXPECTED)
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
    files: list[tuple[Path, int]] = []
    if not class_dirs:
        found = _image_files(root)
        if not found:
            raise LinearCNNInputError(
                f"folder {str(root)!r} has no sub-folders and no images; expected {_FOLDER_EXPECTED} "
                f"(files ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        files = [(path, -1) for path in found]  # a flat folder: unlabelled
        class_names = []
    if class_names is None:
        class_names = [path.name for path in class_dirs]
    unknown = [path.name for path in class_dirs if path.name not in class_names]
    if unknown:
        raise LinearCNNInputError(
            f"folder {str(root)!r} has class folders {unknown} that the train split lacks; "
            f"expected the test classes to be among {class_names}"
        )
    for class_dir in class_dirs:
        label = class_names.index(class_dir.name)
        found = _image_files(class_dir)
        if not found:
            raise LinearCNNInputError(
                f"class folder {str(class_dir)!r} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
            )
        files.extend((path, label) for path in found)
    files = files[: limited(len(files), limit)]
    sizes: list[tuple[int, int]] = []
    gray = True
    for path, _ in files:
        with open_picture(path, f"image file {str(path)!r}") as picture:  # headers only
            sizes.append(picture.size)
            gray = gray and picture.mode in _GRAY_MODES
    if channels is not None:
        gray = channels == 1
    labels = None if not class_dirs else np.asarray([label for _, label in files], dtype=np.int64)
    kind = "" if class_dirs else " (flat: unlabelled)"
    if image_size is not None:
        images = np.stack([_read_picture(path, image_size, gray) for path, _ in files])  # (N, C, N', N')
        resized = sum(size != (image_size, image_size) for size in sizes)
        note = f", {resized} resized (short side {image_size}, centre crop)" if resized else ""
        return images, labels, class_names, f"image folder {root}{split_note}{kind}{note}"
    counts = Counter(sizes)
    # the most common size; ties go to the size seen first
    common = max(counts, key=lambda size: (counts[size], -sizes.index(size)))
    for (path, _), (width, height) in zip(files, sizes):
        if width < common[0] or height < common[1]:
            raise LinearCNNInputError(
                f"image file {str(path)!r} is {width}x{height}, smaller than the folder's common size "
                f"{common[0]}x{common[1]}; images are only ever shrunk, never enlarged (pass an image size, "
                "--image-size N, to resize every image to N x N)"
            )
    images = np.stack([_read_picture(path, common, gray) for path, _ in files])  # (N, C, H, W)
    resized = sum(size != common for size in sizes)
    note = f", {resized} resized" if resized else ""
    return images, labels, class_names, f"image folder {root}{split_note}{kind}{note}"


def has_test_split(root: Path) -> bool:
    """Whether the folder `root` holds train/ and test/ (or val/) sub-folders."""
    check_dir(root, "folder", _FOLDER_EXPECTED)
    return _folder_splits(root) is not None


__all__ = ["IMAGE_SUFFIXES", "has_test_split", "load_folder"]

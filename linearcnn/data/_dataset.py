"""The `ImageDataset` container, the pixel-scale rule, per-channel normalisation, and the two
reshapings every format shares: `resize_center_crop` (short side to N, centre crop N x N, as
ImageNet evaluation does) and `convert_channels` (grey <-> RGB)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linearcnn._files import atomic_save, check_writable_file
from linearcnn.errors import LinearCNNInputError

#: ITU-R 601-2 luma weights (Pillow's "L" conversion): RGB -> grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: How many images one chunk of the float64 channel statistics covers (bounds temporary memory).
_STATS_CHUNK = 2048


def to_unit_float(pixels: np.ndarray, what: str) -> np.ndarray:
    """Convert stored pixel values to float32 in [0, 1] (the scale every loader returns).

    The rule, by dtype:
      * uint8 -> x / 255; uint16 -> x / 65535; bool -> 0 or 1;
      * other integer types must lie within [0, 255] and are read as 8-bit (x / 255);
      * floats must be finite; values within [0, 1] are kept, values within [0, 255] with a
        maximum above 1 are read as 8-bit values stored as floats (x / 255); anything else
        (negative values, e.g. images that are already normalised, or values above 255) is an
        error rather than a silent rescale, because a rescale would change the statistics the
        toolkit measures. (A float image on the 0..255 scale whose brightest pixel is <= 1 would
        be read as [0, 1]; such an image is black on that scale.)
    `what` names the input in error messages.
    """
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.size == 0:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise LinearCNNInputError(
                f"{what}: {array.dtype} pixel values span [{low}, {high}]; expected uint8, "
                f"uint16, or integers within [0, 255]"
            )
        return array.astype(np.float32) / np.float32(255)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise LinearCNNInputError(f"{what}: pixel values contain NaN or infinity")
        low_value, high_value = float(array.min()), float(array.max())
        if low_value >= 0.0 and high_value <= 1.0:
            return array.astype(np.float32, copy=False)
        if low_value >= 0.0 and high_value <= 255.0:
            return (array.astype(np.float64) / 255.0).astype(np.float32)
        raise LinearCNNInputError(
            f"{what}: float pixel values span [{low_value:.4g}, {high_value:.4g}]; expected [0, 1] "
            f"(or [0, 255] for 8-bit values stored as floats)"
        )
    raise LinearCNNInputError(
        f"{what}: pixel dtype {array.dtype} is not an image type; expected uint8 or float"
    )


def normalize_images(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-channel normalisation `(x - mean[c]) / std[c]`, returned as float32 (N, C, H, W).

    `images` is (N, C, H, W) (or (C, H, W) for one image); `mean` and `std` have one value per
    channel (or are scalars). This is the normalisation training applies, and the one patch
    statistics must use so that their PCA describes what the first layer sees.
    """
    array = np.asarray(images)
    if array.ndim not in (3, 4):
        raise LinearCNNInputError(
            f"images of shape {array.shape}: expected (N, C, H, W) or (C, H, W)"
        )
    channels = array.shape[-3]
    mean_c, std_c = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mean_c.size not in (1, channels) or std_c.size not in (1, channels):
        raise LinearCNNInputError(
            f"normalisation mean of shape {mean_c.shape} / std of shape {std_c.shape}: expected "
            f"one value per channel ({channels})"
        )
    mean_c = np.broadcast_to(mean_c.reshape(-1), (channels,))  # (C,)
    std_c = np.broadcast_to(std_c.reshape(-1), (channels,))  # (C,)
    if not np.all(np.isfinite(mean_c)) or not np.all(np.isfinite(std_c)) or np.any(std_c <= 0):
        raise LinearCNNInputError(
            f"normalisation mean {mean_c.tolist()} / std {std_c.tolist()}: expected finite "
            f"values and std > 0 (a constant channel cannot be normalised)"
        )
    shape = (channels, 1, 1)
    mean32 = mean_c.astype(np.float32).reshape(shape)  # (C, 1, 1)
    std32 = std_c.astype(np.float32).reshape(shape)  # (C, 1, 1)
    return (array.astype(np.float32, copy=False) - mean32) / std32  # (N, C, H, W) float32


def convert_channels(images: np.ndarray, channels: int, what: str = "images") -> np.ndarray:
    """(N, C, H, W) float images with `channels` channels: 3 -> 1 by ITU-R 601-2 luma (`LUMA_WEIGHTS`),
    1 -> 3 by repeating the grey plane; the same count returns `images`. Other conversions are an error."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise LinearCNNInputError(f"channels {channels!r}: expected 1 or 3", parameter="channels")
    have = int(images.shape[1])
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.clip((images * weights).sum(axis=1, keepdims=True, dtype=np.float32), 0.0, 1.0)  # (N, 1, H, W)
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)  # (N, 3, H, W)
    raise LinearCNNInputError(f"{what} have {have} channels; only 1 <-> 3 can be converted", parameter="channels")


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """One float image (C, H, W) in [0, 1] as (C, size, size): the short side resized to `size`
    (Pillow bilinear, antialiased when shrinking, per channel in float), then the centre crop
    `size` x `size` (the evaluation transform of ImageNet models). Returned unchanged when it is
    already size x size."""
    from PIL import Image

    channels, height, width = image.shape
    if height == size and width == size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    planes = np.ascontiguousarray(image, dtype=np.float32)
    if (new_h, new_w) != (height, width):
        planes = np.stack([  # float32 planes become Pillow "F" images: no 8-bit rounding
            np.asarray(Image.fromarray(planes[c]).resize((new_w, new_h), Image.Resampling.BILINEAR))
            for c in range(channels)
        ])  # (C, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.clip(planes[:, top : top + size, left : left + size], 0.0, 1.0).astype(np.float32)  # (C, size, size)


@dataclass
class ImageDataset:
    """Images and labels from one data-set spec.

    images: (N, C, H, W) float32 with pixel scale [0, 1]; labels: (N,) int64 indices into
    `classes`, or None when the set has no labels; classes: class names ([] when unlabelled);
    spec: the spec string it came from; description: one human sentence about it.
    """

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    spec: str
    description: str
    _stats: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _normalization: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 4:
            raise LinearCNNInputError(
                f"data set {self.spec!r}: images have shape {images.shape}; expected (N, C, H, W)"
            )
        if images.dtype != np.float32:
            images = images.astype(np.float32)
        self.images = images
        self.classes = [str(name) for name in self.classes]
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (images.shape[0],):
                raise LinearCNNInputError(
                    f"data set {self.spec!r}: {labels.shape} labels for {images.shape[0]} images; "
                    f"expected one label per image"
                )
            labels = labels.astype(np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise LinearCNNInputError(
                    f"data set {self.spec!r}: labels span [{labels.min()}, {labels.max()}] but "
                    f"there are {len(self.classes)} class names; expected labels in "
                    f"[0, {len(self.classes) - 1}]"
                )
            self.labels = labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation over all images and pixels, float64 (C,).

        Two passes in float64 (mean, then mean squared deviation), chunked over images; the
        population standard deviation (ddof=0). Cached: the images are not expected to change.
        """
        if self._stats is None:
            images = self.images  # (N, C, H, W)
            channels = images.shape[1]
            count = images.shape[0] * images.shape[2] * images.shape[3]
            if count == 0:
                raise LinearCNNInputError(f"data set {self.spec!r} is empty; no channel statistics")
            total = np.zeros(channels, dtype=np.float64)
            for start in range(0, images.shape[0], _STATS_CHUNK):
                total += images[start : start + _STATS_CHUNK].sum(axis=(0, 2, 3), dtype=np.float64)
            mean = total / count  # (C,)
            squares = np.zeros(channels, dtype=np.float64)
            for start in range(0, images.shape[0], _STATS_CHUNK):
                chunk = (
                    images[start : start + _STATS_CHUNK].astype(np.float64)
                    - mean[None, :, None, None]
                )
                squares += np.einsum("nchw,nchw->c", chunk, chunk)
            std = np.sqrt(squares / count)  # (C,)
            self._stats = (mean, std)
        mean, std = self._stats
        return mean.copy(), std.copy()

    def normalization_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """`channel_stats()` for normalising by them: a channel with one value everywhere is a
        one-line LinearCNNInputError naming this data set (its std is 0)."""
        if self._normalization is not None:
            return self._normalization[0].copy(), self._normalization[1].copy()
        mean, std = self.channel_stats()
        constant = [c for c, s in enumerate(np.asarray(std).reshape(-1)) if not s > 0]
        if constant:
            raise LinearCNNInputError(
                f"data {self.spec!r}: channel {', '.join(map(str, constant))} has the same value in every pixel of every "
                f"image ({float(np.asarray(mean).reshape(-1)[constant[0]]):.4g}), so it cannot be normalised per "
                "channel; expected images that vary"
            )
        return mean, std

    def normalized(
        self, mean: np.ndarray | None = None, std: np.ndarray | None = None
    ) -> np.ndarray:
        """Images normalised per channel, float32 (N, C, H, W); the set's own stats by default."""
        if mean is None or std is None:
            own_mean, own_std = self.normalization_stats() if std is None else self.channel_stats()
            mean = own_mean if mean is None else mean
            std = own_std if std is None else std
        return normalize_images(self.images, mean, std)

    def with_normalization(self, mean: np.ndarray, std: np.ndarray) -> ImageDataset:
        """A view of this set (same image array) normalised by the given per-channel `mean` and `std`
        instead of its own statistics: its `normalization_stats()` and `normalized()` use them, so
        `dataset_patch_stats` measures what a network trained with that normalisation sees (e.g.
        ImageNet's constants, or a checkpoint's recorded training statistics)."""
        channels = self.images.shape[1]
        mean_c = np.asarray(mean, dtype=np.float64).reshape(-1)
        std_c = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean_c.size != channels or std_c.size != channels:
            raise LinearCNNInputError(
                f"normalisation of {mean_c.size} mean / {std_c.size} std values for data {self.spec!r}: expected one per "
                f"channel ({channels})", parameter="norm",
            )
        if not np.all(np.isfinite(mean_c)) or not np.all(np.isfinite(std_c)) or np.any(std_c <= 0):
            raise LinearCNNInputError(f"normalisation mean {mean_c.tolist()} / std {std_c.tolist()}: expected finite "
                                      "values and std > 0", parameter="norm")
        view = ImageDataset(self.images, self.labels, list(self.classes), self.spec, self.description)
        view._stats = self._stats
        view._normalization = (mean_c.copy(), std_c.copy())
        return view

    def padded(self, pixels: int, fill: np.ndarray | None = None) -> ImageDataset:
        """A copy with `pixels` extra pixels on each side of every image, e.g. 28x28 -> 32x32 with 2.

        The border takes `fill`, one value per channel: by default this set's per-channel mean, so
        the border is exactly zero after per-channel normalisation (a border at the mean leaves the
        channel mean unchanged) — the zero padding of normalised images. Pass the training set's
        mean as `fill` when padding its test split, which is normalised with the training statistics.
        `pixels` 0 returns the set itself. The copy keeps `spec`; its description says it is padded.
        """
        if isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) or pixels < 0:
            raise LinearCNNInputError(f"pad {pixels!r}: expected an integer >= 0", parameter="pad")
        if pixels == 0:
            return self
        channels = self.images.shape[1]
        values = self.channel_stats()[0] if fill is None else np.asarray(fill, dtype=np.float64).reshape(-1)
        if values.size not in (1, channels):
            raise LinearCNNInputError(f"pad fill of {values.size} values: expected one per channel ({channels})")
        values = np.broadcast_to(values, (channels,)).astype(np.float32)  # (C,)
        n, _, h, w = self.images.shape
        images = np.empty((n, channels, h + 2 * pixels, w + 2 * pixels), dtype=np.float32)  # (N, C, H+2p, W+2p)
        images[...] = values[None, :, None, None]
        images[:, :, pixels : pixels + h, pixels : pixels + w] = self.images
        return ImageDataset(images, None if self.labels is None else self.labels.copy(), list(self.classes), self.spec,
                            f"{self.description} Padded by {pixels} px on each side with the channel mean.")

    def class_counts(self) -> np.ndarray:
        """(num_classes,) int64 number of images per class (empty when unlabelled)."""
        if self.labels is None:
            return np.zeros(0, dtype=np.int64)
        return np.bincount(self.labels, minlength=len(self.classes)).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary: count, shape, classes with counts, channel mean/std."""
        mean, std = self.channel_stats()
        n, c, h, w = self.images.shape
        counts = self.class_counts()
        return {
            "spec": self.spec,
            "description": self.description,
            "count": int(n),
            "shape": [int(c), int(h), int(w)],
            "labelled": self.labels is not None,
            "classes": [
                {"name": name, "count": int(count)} for name, count in zip(self.classes, counts)
            ],
            "channel_mean": [float(v) for v in mean],
            "channel_std": [float(v) for v in std],
            "pixel_min": float(self.images.min()),
            "pixel_max": float(self.images.max()),
        }

    def grid_image(self, n: int = 64) -> np.ndarray:
        """The first `n` images tiled in a near-square grid: uint8 (rows, cols) or (rows, cols, 3).

        Tiles are separated by 2-pixel white lines and enlarged (nearest neighbour) so that a
        tile is at least 64 pixels; one-channel sets give a grey grid, three-channel sets an RGB
        grid, and any other channel count shows channel 0 in grey.
        """
        if not isinstance(n, (int, np.integer)) or n <= 0:
            raise LinearCNNInputError(f"grid size {n!r}: expected a positive number of images")
        count = min(int(n), len(self))
        if count == 0:
            raise LinearCNNInputError(f"data set {self.spec!r} is empty; nothing to draw")
        tiles = self.images[:count]  # (n, C, H, W)
        if tiles.shape[1] != 3:
            tiles = tiles[:, :1]  # (n, 1, H, W)
        tiles = (
            np.clip(np.rint(tiles * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        )  # (n, H, W, C')
        height, width = tiles.shape[1:3]
        zoom = max(1, 64 // max(height, width))
        tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)  # (n, zH, zW, C')
        cols = math.ceil(math.sqrt(count))
        rows = math.ceil(count / cols)
        gap = 2
        tile_h, tile_w = tiles.shape[1:3]
        canvas = np.full(
            (rows * (tile_h + gap) + gap, cols * (tile_w + gap) + gap, tiles.shape[3]),
            255,
            np.uint8,
        )
        for index in range(count):
            top = gap + (index // cols) * (tile_h + gap)
            left = gap + (index % cols) * (tile_w + gap)
            canvas[top : top + tile_h, left : left + tile_w] = tiles[index]
        return canvas[..., 0] if canvas.shape[2] == 1 else canvas

    def save_grid(self, path: str | os.PathLike, n: int = 64) -> None:
        """Write the first `n` images as a PNG grid (see `grid_image`), atomically."""
        from PIL import Image

        target = check_writable_file(path, "grid file")
        if target.suffix.lower() != ".png":
            raise LinearCNNInputError(f"grid file {str(target)!r}: expected a .png path")
        picture = Image.fromarray(self.grid_image(n))
        atomic_save(target, lambda tmp: picture.save(tmp, format="PNG"))

"""The built-in data set: CIFAR-like 32x32 RGB crops of ten natural photographs that ship inside
scikit-image and scikit-learn, made offline in well under a second.

See the package docstring (`linearcnn.data`) for what the set is, why it looks the way it does,
and its measured power spectrum. The construction, step by step:

1. Photos (read by path from the installed packages, never downloaded): the ten colour photos
   in `PHOTOS`; one class per photo. Grayscale photos (camera, coins, moon, brick, grass, ...)
   are left out: copied into three equal channels they would be told apart from every other
   class by the absence of colour alone; synthetic images (chessboard, logo, text, phantom,
   page, colour wheel) are left out because they are not natural images.
2. Regions: each photo is cut at its vertical midline; the left half feeds the train split and
   the right half the test split, so no source pixel is shared between the splits.
3. Scales: each half is shrunk (Pillow's antialiasing Lanczos filter) to `len(LEVELS)` views
   whose photo short side is L = 64 ... 256 pixels (geometric steps); a 32x32 crop then spans
   1/2 down to 1/8 of the photo's short side, so crops show objects and scene layout, not just
   texture.
4. Crops: image i draws (scale level, position, horizontal flip) from row i of a
   `numpy.random.default_rng([seed, split])` stream, so the first N images are the same for
   every requested size; positions whose 32x32 window is more than a quarter pure black
   (all channels <= 4/255: the frame around the retina, some of the astronaut's backdrop) are
   never drawn. Labels come in blocks of ten, each block a random permutation of the classes,
   so every prefix of the set is balanced to within one image per class.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from linearcnn.errors import LinearCNNInputError

CROP = 32  # the default crop side; `builtin:N@C` asks for C x C crops (8 <= C <= 128, `linearcnn.data._spec`)
#: Short side (pixels) of the shrunk photo for each scale level at the default crop: 64 * 4**(j/11),
#: j = 0..11; a C-pixel crop uses the levels scaled by C / 32, so it spans the same share of the photo.
LEVELS = tuple(round(64 * 4 ** (j / 11)) for j in range(12))


def levels(crop: int) -> tuple[int, ...]:
    """The scale levels (photo short sides) of `crop`-pixel crops."""
    return LEVELS if crop == CROP else tuple(round(level * crop / CROP) for level in LEVELS)
#: Default number of images per split.
DEFAULT_SIZE = {True: 10_000, False: 2_000}
#: Photometric jitter per crop: exposure gain log-uniform in [1/EXPOSURE, EXPOSURE] times a
#: white-balance gain per channel log-uniform in [1/WHITE_BALANCE, WHITE_BALANCE], each channel's
#: gain capped so that the crop's brightest value in that channel stays <= 255 (no clipping).
EXPOSURE = 2.0
WHITE_BALANCE = 1.3
#: A crop may hold at most this fraction of pure-black pixels (all channels <= BLACK_LEVEL).
MAX_BLACK_FRACTION = 0.25
BLACK_LEVEL = 4

#: (class name, package, path inside the package) for each photo, in label order.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("cat", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("deep_field", "skimage", "data/hubble_deep_field.jpg"),
    ("tissue", "skimage", "data/ihc.png"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("retina", "skimage", "data/retina.jpg"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("palace", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
)
CLASSES = [name for name, _, _ in PHOTOS]


def photo_path(package: str, relative: str) -> Path:
    """Where an installed package keeps a file (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LinearCNNInputError(
            f"builtin data set needs the {package!r} package for its photos; install "
            f"{'scikit-image' if package == 'skimage' else 'scikit-learn'}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The photos as read-only uint8 (H, W, 3) arrays, in `PHOTOS` order."""
    from linearcnn.data.formats._common import open_picture

    photos = []
    for _, package, relative in PHOTOS:
        path = photo_path(package, relative)
        with open_picture(path, f"builtin data set: photo {str(path)!r}") as picture:  # size checked first
            array = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
        array.setflags(write=False)
        photos.append(array)
    return tuple(photos)


def region_bounds(width: int, train: bool) -> tuple[int, int]:
    """Columns [start, stop) of a photo of this width used by the split (left half: train)."""
    middle = width // 2
    return (0, middle) if train else (middle, width)


@dataclass(frozen=True)
class _View:
    """One photo half shrunk to one scale level, with the crop positions it allows."""

    pixels: np.ndarray  # (h, w, 3) uint8
    scale_x: float  # view pixels per photo pixel, horizontally
    scale_y: float
    positions: np.ndarray  # (P, 2) int64 (y, x) top-left corners of allowed crops


def _allowed_positions(view: np.ndarray, crop: int) -> np.ndarray:
    """(P, 2) top-left corners of crop x crop windows at most MAX_BLACK_FRACTION pure black."""
    black = np.all(view <= BLACK_LEVEL, axis=2).astype(np.int64)  # (h, w)
    table = np.pad(black.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (h+1, w+1) summed-area table
    window = (
        table[crop:, crop:] - table[:-crop, crop:] - table[crop:, :-crop] + table[:-crop, :-crop]
    )
    ys, xs = np.nonzero(window <= MAX_BLACK_FRACTION * crop * crop)  # window: (h-crop+1, w-crop+1)
    if ys.size == 0:  # never happens for the shipped photos; fall back to every position
        ys, xs = np.indices(window.shape).reshape(2, -1)
    return np.stack([ys, xs], axis=1).astype(np.int64)


@lru_cache(maxsize=2)
def _views(train: bool, crop: int = CROP) -> tuple[tuple[_View, ...], ...]:
    """views[photo][level] for the split's half of every photo."""
    from PIL import Image

    result = []
    for photo in _photos():
        height, width = photo.shape[:2]
        start, stop = region_bounds(width, train)
        half = Image.fromarray(np.ascontiguousarray(photo[:, start:stop]))
        short = min(height, width)
        views = []
        for level in levels(crop):
            level = min(level, short)  # larger crops: never enlarge a photo (its finest levels repeat)
            size = (
                max(crop, round((stop - start) * level / short)),
                max(crop, round(height * level / short)),
            )
            shrunk = half.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            pixels = np.asarray(shrunk)  # (h, w, 3) uint8
            pixels.setflags(write=False)
            scale_x, scale_y = size[0] / (stop - start), size[1] / height
            views.append(_View(pixels, scale_x, scale_y, _allowed_positions(pixels, crop)))
        result.append(tuple(views))
    return tuple(result)


@dataclass(frozen=True)
class BuiltinLayout:
    """Where each builtin image came from (arrays of length N).

    label: photo index (= class); level: index into LEVELS; y, x: top-left corner in the view;
    flip: mirrored left-right; gain: (N, 3) requested per-channel photometric gain (before the
    no-clipping cap); box: (N, 4) float64 (x0, y0, x1, y1) source rectangle in photo pixel
    coordinates (before the flip).
    """

    label: np.ndarray
    level: np.ndarray
    y: np.ndarray
    x: np.ndarray
    flip: np.ndarray
    gain: np.ndarray
    box: np.ndarray


def builtin_layout(count: int, seed: int, train: bool, crop: int = CROP) -> BuiltinLayout:
    """The draws behind the first `count` images of a split (prefix-stable: see module doc)."""
    views = _views(train, crop)
    split = 0 if train else 1
    draws = np.random.default_rng([seed, split, 0]).random((count, 7))  # row i belongs to image i
    blocks = -(-count // len(PHOTOS))
    order = np.argsort(
        np.random.default_rng([seed, split, 1]).random((blocks, len(PHOTOS))), axis=1
    )
    label = order.reshape(-1)[:count].astype(np.int64)  # (N,) balanced in every block of ten
    level = np.minimum((draws[:, 0] * len(LEVELS)).astype(np.int64), len(LEVELS) - 1)
    flip = draws[:, 2] < 0.5
    exposure = (2 * draws[:, 3:4] - 1) * np.log(EXPOSURE)  # (N, 1) log gain, all channels
    white_balance = (2 * draws[:, 4:7] - 1) * np.log(WHITE_BALANCE)  # (N, 3) log gain per channel
    gain = np.exp(exposure + white_balance)  # (N, 3)
    y = np.empty(count, dtype=np.int64)
    x = np.empty(count, dtype=np.int64)
    box = np.empty((count, 4), dtype=np.float64)
    photos = _photos()
    for photo_index in range(len(PHOTOS)):
        start, _ = region_bounds(photos[photo_index].shape[1], train)
        for level_index in range(len(LEVELS)):
            chosen = np.nonzero((label == photo_index) & (level == level_index))[0]
            if chosen.size == 0:
                continue
            view = views[photo_index][level_index]
            pick = np.minimum(
                (draws[chosen, 1] * len(view.positions)).astype(np.int64), len(view.positions) - 1
            )
            y[chosen], x[chosen] = view.positions[pick, 0], view.positions[pick, 1]
            box[chosen, 0] = start + x[chosen] / view.scale_x
            box[chosen, 1] = y[chosen] / view.scale_y
            box[chosen, 2] = start + (x[chosen] + crop) / view.scale_x
            box[chosen, 3] = (y[chosen] + crop) / view.scale_y
    return BuiltinLayout(label, level, y, x, flip, gain, box)


@lru_cache(maxsize=4)
def builtin_crops(count: int, seed: int, train: bool, crop: int = CROP) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images of a split: read-only uint8 (N, 3, crop, crop) and int64 labels (N,)."""
    if count <= 0:
        raise LinearCNNInputError(
            f"builtin data set size {count}: expected a positive number of images"
        )
    layout = builtin_layout(count, seed, train, crop)
    views = _views(train, crop)
    crops = np.empty((count, 3, crop, crop), dtype=np.uint8)
    for photo_index in range(len(PHOTOS)):
        for level_index in range(len(LEVELS)):
            chosen = np.nonzero((layout.label == photo_index) & (layout.level == level_index))[0]
            if chosen.size == 0:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(
                views[photo_index][level_index].pixels, (crop, crop), axis=(0, 1)
            )  # (h-crop+1, w-crop+1, 3, crop, crop)
            crops[chosen] = windows[layout.y[chosen], layout.x[chosen]]  # (k, 3, crop, crop)
    crops[layout.flip] = crops[layout.flip][..., ::-1]
    brightest = np.maximum(crops.max(axis=(2, 3)), 1).astype(np.float64)  # (N, 3)
    gain = np.minimum(layout.gain, 255.0 / brightest)  # (N, 3) capped: nothing clips
    scale = gain[:, :, None, None].astype(np.float32)  # (N, 3, 1, 1)
    crops = np.rint(crops * scale).astype(np.uint8)  # (N, 3, crop, crop)
    crops.setflags(write=False)
    labels = layout.label.copy()
    labels.setflags(write=False)
    return crops, labels


def builtin_description(count: int, seed: int, train: bool, crop: int = CROP) -> str:
    split, half = ("train", "left") if train else ("test", "right")
    return (
        f"builtin: {count} {crop}x{crop} RGB crops of {len(PHOTOS)} natural photos (one class per photo), "
        f"{split} split from the {half} half of each photo, {len(LEVELS)} scales, random "
        f"left-right flips and exposure/white-balance jitter, seed {seed}"
    )

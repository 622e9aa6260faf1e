"""Exact streaming statistics of all stride-1 image patches, and their eigen-decomposition; also
each image's mean patch vector (`mean_patches`, the linear model's feature map) and the patch
grid of an image (`patch_grid`).

    >>> import numpy as np
    >>> from linearcnn.patches import patch_stats
    >>> images = np.random.default_rng(0).normal(size=(20, 3, 8, 8))
    >>> stats = patch_stats(images, 3, device="cpu")
    >>> stats.eigenvalues.shape, stats.num_patches           # d = 3*3*3, 20 images x 6 x 6 positions
    ((27,), 720)

PAPER Sec. 1: the patches are all `C x k x k` windows at valid stride-1 positions, flattened in
`(C, k, k)` order (the order of `conv_weight.reshape(K, -1)`); their second-moment matrix is
`(1/M) sum_m p_m p_m^T` over all M patches, its eigenvectors `u_i` sorted by decreasing
eigenvalue `lambda_i^2` (a variance).

How it is computed (exact, no patch matrix is ever formed)
----------------------------------------------------------
Entry `((c1, dy1, dx1), (c2, dy2, dx2))` of the moment matrix is a sum over images and over the
patch positions `(y, x)` of `I[c1, y+dy1, x+dx1] * I[c2, y+dy2, x+dx2]`: a product of two pixels
at relative offset `(Dy, Dx) = (dy2-dy1, dx2-dx1)`, summed over a rectangle of anchor pixels
that depends only on `(dy1, dx1)`. So we compute, per anchor pixel, the products with its
neighbours at every offset `Dy in [0, k)`, `Dx in (-k, k)` summed over the images (a batched
matrix product per pixel, K = images: `(C, n) @ (n, (2k-1) C)`, in float64), then take the k*k
rectangle sums with an integral image and scatter them into the `d x d` matrix. This costs
about `2 k (2k-1) C^2 H W` flops per image instead of the `2 d^2 (H-k+1)(W-k+1)` of forming the
patch matrix (`d = C k k`), about 5x fewer for 3x3x3 patches, and it needs only one
`(H W, C, n)` float64 copy of a batch of n images instead of a `(n H W, d)` patch matrix. All
products and sums are float64, so the result equals a float64 brute-force computation to
rounding (~1e-15 relative). Memory is bounded by the batch size, whatever the number of images.
Measured (`benchmarks/bench_patch_stats.py`, 2-core Xeon, 10,000 32x32 RGB images, k=3): 0.27 s
and 364 MiB peak RSS against 44 s and 9.6 GiB for unfold + `torch.pca_lowrank`, eigenvalues equal
to 6e-15 relative; peak RSS 311 MiB whether 1e4, 1e5 or 1e6 images are streamed.

Centred or not
--------------
`centered=False` (default) decomposes the uncentred second moment `E[p p^T]`; `centered=True`
the covariance `E[p p^T] - m m^T` (m the mean patch). The default is uncentred because that is
what gradient descent on the linear model sees (PAPER Sec. 2: `A = E[pbar pbar^T]`, no
centring), and because images are normalised per channel before the statistics are taken, so
the mean patch is close to zero and the two matrices differ only by the small rank-one `m m^T`.
Measured with `benchmarks/bench_patch_stats.py` (recorded in `benchmarks/results/
patch_stats.json`), 3x3 patches, uncentred vs centred:
  * 10,000 1/f "natural-like" 32x32 RGB images normalised per channel: `|m|^2` is 1.1e-7 of the
    trace; eigenvalues differ by at most 4.8e-7 (relative), eigenvectors |cos| > 0.99999998;
  * the built-in photo set normalised per channel: `|m|^2` is 3.9e-6 of the trace (the mean is
    zero per channel, but border pixels sit in fewer patches); the top eigenvalue differs by
    2.5e-6, the smallest by up to 3.4e-4, eigenvectors |cos| > 0.9999999;
  * the same photos un-normalised (pixels in [0, 1]): `|m|^2` is 2x the trace and the top
    eigenvalue is 3.6x larger uncentred (it absorbs the mean brightness). Normalise first
    (`dataset_patch_stats` does) or pass `centered=True`.

For `centered=True` the sums are taken of images minus a per-channel shift (the first batch's
channel means) and corrected exactly afterwards, so the covariance does not lose digits to
cancellation when the pixel mean is large compared with the spread.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import queue
import sys
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from linearcnn._files import atomic_save, check_writable_file
from linearcnn._linalg import sorted_psd_eigh
from linearcnn.device import resolve_device
from linearcnn.errors import LinearCNNInputError
from linearcnn.records import versions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.data import ImageDataset

__all__ = [
    "STATS_FORMAT",
    "PatchStats",
    "dataset_patch_stats",
    "mean_patches",
    "patch_grid",
    "patch_stats",
]

#: The `format` tag and version written into saved statistics.
STATS_FORMAT = "linearcnn-patch-stats"
STATS_FORMAT_VERSION = 1

#: Largest total size of the per-pixel neighbour-product maps kept across batches (bytes, shared
#: by the worker threads); larger maps (big images, big kernels) are reduced to their rectangle
#: sums after every chunk instead.
_MAP_BUDGET_BYTES = 64 * 2**20
#: Float64 values in the k image rows of one CPU chunk (k * W * C * images): the working set
#: of the sliding neighbour products, kept within L2 (tuned on a 2-core Xeon, 32x32 RGB, k=3).
_CPU_WINDOW_VALUES = 2**15


@dataclass
class PatchStats:
    """Second moments of all stride-1 `C x k x k` patches and their eigen-decomposition.

    eigenvalues: (d,) float64, descending, the variances `lambda_i^2` along the eigenvectors
        (clipped at 0 from below: a rank-deficient matrix can give eigenvalues of -1e-17 from
        rounding, which are not variances); eigenvectors: (d, d) float64, column i = u_i, in
        `(C, k, k)` order (the order of `conv_weight.reshape(K, -1)`), each with its largest
        entry (in absolute value) positive so that results are reproducible;
        second_moment: (d, d) the symmetric matrix decomposed (the covariance if `centered`);
        mean: (d,) the mean patch; num_patches: number of patches averaged
        (images x (H-k+1) x (W-k+1)); channel_mean/channel_std: the per-channel normalisation
        applied to the images first (None when the images were used as given); data_spec: where
        the images came from ("" when unknown).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    second_moment: np.ndarray
    mean: np.ndarray
    num_patches: int
    channels: int
    kernel_size: int
    centered: bool
    channel_mean: np.ndarray | None = None
    channel_std: np.ndarray | None = None
    data_spec: str = ""
    num_images: int = 0
    image_size: tuple[int, int] | None = None  # (H, W) of the images
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able provenance (versions, ...)

    @property
    def dim(self) -> int:
        """d = C * k * k, the number of inputs per first-layer filter."""
        return self.channels * self.kernel_size * self.kernel_size

    @property
    def stds(self) -> np.ndarray:
        """lambda_i = sqrt(eigenvalues): the standard deviations along the eigenvectors."""
        return np.sqrt(self.eigenvalues)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.kernel_size, self.kernel_size)

    def describe(self) -> str:
        """'3x5x5' style description of the patch shape (used in error messages)."""
        return f"{self.channels}x{self.kernel_size}x{self.kernel_size}"

    def uncentered_moment(self) -> np.ndarray:
        """E[p p^T], whichever matrix was decomposed."""
        if not self.centered:
            return self.second_moment.copy()
        return self.second_moment + np.outer(self.mean, self.mean)  # (d, d)

    # ---------------------------------------------------------------- saving and loading
    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to a `.npz` file (no pickled objects), atomically."""
        target = check_writable_file(path, "patch statistics file")
        meta = {
            "format": STATS_FORMAT,
            "format_version": STATS_FORMAT_VERSION,
            "num_patches": int(self.num_patches),
            "channels": int(self.channels),
            "kernel_size": int(self.kernel_size),
            "centered": bool(self.centered),
            "data_spec": str(self.data_spec),
            "num_images": int(self.num_images),
            "image_size": None if self.image_size is None else [int(v) for v in self.image_size],
            "extra": self.extra,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta)),
            "eigenvalues": np.asarray(self.eigenvalues, dtype=np.float64),
            "eigenvectors": np.asarray(self.eigenvectors, dtype=np.float64),
            "second_moment": np.asarray(self.second_moment, dtype=np.float64),
            "mean": np.asarray(self.mean, dtype=np.float64),
        }
        if self.channel_mean is not None:
            arrays["channel_mean"] = np.asarray(self.channel_mean, dtype=np.float64)
        if self.channel_std is not None:
            arrays["channel_std"] = np.asarray(self.channel_std, dtype=np.float64)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz"
                np.savez(handle, **arrays)

        atomic_save(target, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatchStats:
        """Read statistics written by `save`, checking every field (LinearCNNInputError if bad)."""
        where = f"patch statistics file {str(path)!r}"
        if not os.path.isfile(path):
            raise LinearCNNInputError(f"{where} does not exist or is not a file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LinearCNNInputError(f"{where} is not a readable .npz archive ({first_line})") from None
        return _stats_from_arrays(arrays, where)


def _stats_from_arrays(arrays: dict[str, np.ndarray], where: str) -> PatchStats:
    """Validate the arrays of a saved file and build PatchStats from them."""
    required = ["meta", "eigenvalues", "eigenvectors", "second_moment", "mean"]
    missing = [name for name in required if name not in arrays]
    if missing:
        raise LinearCNNInputError(f"{where} lacks {', '.join(missing)}; expected a file written by PatchStats.save")
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (ValueError, TypeError, IndexError):
        raise LinearCNNInputError(f"{where} has unreadable metadata; expected a file written by PatchStats.save") from None
    if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise LinearCNNInputError(f"{where} has format {found!r}; expected {STATS_FORMAT!r}")
    if meta.get("format_version") != STATS_FORMAT_VERSION:
        raise LinearCNNInputError(
            f"{where} has format version {meta.get('format_version')!r}; expected {STATS_FORMAT_VERSION}"
        )
    ints = {}
    for key in ("num_patches", "channels", "kernel_size"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LinearCNNInputError(f"{where}: {key} is {value!r}; expected a positive integer")
        ints[key] = value
    if not isinstance(meta.get("centered"), bool):
        raise LinearCNNInputError(f"{where}: centered is {meta.get('centered')!r}; expected true or false")
    d = ints["channels"] * ints["kernel_size"] ** 2
    expected_shapes = {"eigenvalues": (d,), "eigenvectors": (d, d), "second_moment": (d, d), "mean": (d,)}
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes.items():
        checked[name] = _checked_array(arrays[name], shape, name, where)
    for name in ("channel_mean", "channel_std"):
        checked[name] = (
            _checked_array(arrays[name], (ints["channels"],), name, where) if name in arrays else None
        )
    if np.any(checked["eigenvalues"] < 0) or np.any(np.diff(checked["eigenvalues"]) > 0):
        raise LinearCNNInputError(f"{where}: eigenvalues are not non-negative and descending")
    image_size = meta.get("image_size")
    if image_size is not None:
        if not (isinstance(image_size, list) and len(image_size) == 2 and all(isinstance(v, int) for v in image_size)):
            raise LinearCNNInputError(f"{where}: image_size is {image_size!r}; expected [height, width]")
        image_size = (image_size[0], image_size[1])
    num_images = meta.get("num_images", 0)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise LinearCNNInputError(f"{where}: num_images is {num_images!r}; expected a non-negative integer")
    extra = meta.get("extra", {})
    return PatchStats(
        eigenvalues=checked["eigenvalues"],
        eigenvectors=checked["eigenvectors"],
        second_moment=checked["second_moment"],
        mean=checked["mean"],
        num_patches=ints["num_patches"],
        channels=ints["channels"],
        kernel_size=ints["kernel_size"],
        centered=meta["centered"],
        channel_mean=checked["channel_mean"],
        channel_std=checked["channel_std"],
        data_spec=str(meta.get("data_spec", "")),
        num_images=num_images,
        image_size=image_size,
        extra=extra if isinstance(extra, dict) else {},
    )


def _checked_array(array: np.ndarray, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise LinearCNNInputError(f"{where}: {name} has dtype {array.dtype}; expected float64")
    if array.shape != shape:
        raise LinearCNNInputError(f"{where}: {name} has shape {array.shape}; expected {shape}")
    out = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise LinearCNNInputError(f"{where}: {name} contains NaN or Inf")
    return out


# -------------------------------------------------------------------- device and input handling
def patch_grid(height: int, width: int, kernel_size: int, stride: int = 1) -> tuple[int, int]:
    """(rows, columns) of k x k patch locations in an H x W image at `stride`, no padding.

    Raises LinearCNNInputError for a kernel size or stride that is not a positive integer and for
    a kernel larger than the images.
    """
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1:
        raise LinearCNNInputError(f"kernel size must be a positive integer, got {kernel_size!r}")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise LinearCNNInputError(f"stride must be a positive integer, got {stride!r}")
    if kernel_size > height or kernel_size > width:
        raise LinearCNNInputError(f"kernel size {kernel_size} is larger than the images ({height}x{width})")
    return (height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1


def mean_patches(images: torch.Tensor, kernel_size: int, stride: int = 1) -> torch.Tensor:
    """pbar(x): the mean of each image's k x k patches at `stride`, flattened in (C, k, k) order.

    images (N, C, H, W) -> (N, C*k*k), in the images' dtype. Entry (c, i, j) is the mean of
    x[c, i + stride*a, j + stride*b] over all patch locations (a, b), so that
    `conv2d(x, w, stride=stride).mean((2, 3))` equals `pbar(x) @ w.reshape(K, -1).T`; with
    stride 1, `LinearCNN(x) = mean_k(w_k) . pbar(x)` exactly, so this is the linear model's
    feature map (PAPER.md section 2). Raises LinearCNNInputError as `patch_grid` does.
    """
    batch, channels, height, width = images.shape
    out_h, out_w = patch_grid(height, width, kernel_size, stride)
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    columns = [
        images[:, :, i : i + span_h : stride, j : j + span_w : stride].mean(dim=(2, 3))  # (N, C)
        for i in range(kernel_size)
        for j in range(kernel_size)
    ]
    return torch.stack(columns, dim=2).reshape(batch, channels * kernel_size * kernel_size)  # (N, C*k*k)


def _as_tensor(batch: Any, what: str) -> torch.Tensor:
    """A 4-D real tensor of one batch (no copy for tensors and contiguous numeric numpy arrays)."""
    if isinstance(batch, torch.Tensor):
        tensor = batch.detach()
    else:
        array = _as_array(batch, what)
        if array.dtype.kind == "u" and array.dtype != np.uint8:  # torch has few uint16/32/64 ops
            array = array.astype(np.float64)
        if any(s < 0 for s in array.strides):  # torch cannot view negative strides
            array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array)
    if tensor.is_complex():
        raise LinearCNNInputError(f"{what} has dtype {tensor.dtype}; expected real numbers (float or integer)")
    _check_ndim(tuple(tensor.shape), what)
    return tensor


def _as_array(batch: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(batch)
    except (ValueError, TypeError):
        raise LinearCNNInputError(f"{what} is not an array; expected an (N, C, H, W) array or tensor") from None
    if array.dtype.kind not in "biuf":
        raise LinearCNNInputError(f"{what} has dtype {array.dtype}; expected real numbers (float or integer)")
    return array


def _check_ndim(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 4:
        hint = "; add a leading axis for one image" if len(shape) == 3 else ""
        raise LinearCNNInputError(
            f"{what} has shape {shape} ({len(shape)}-D); expected a 4-D (N, C, H, W) batch{hint}"
        )


def _batches(images: Any, batch_size: int) -> tuple[Iterator[tuple[torch.Tensor, str]], int | None]:
    """(iterator of (batch of at most batch_size images, its name), total images if known)."""
    if isinstance(images, torch.Tensor):
        whole = _as_tensor(images, "images")

        def split_tensor() -> Iterator[tuple[torch.Tensor, str]]:
            for start in range(0, whole.shape[0], batch_size):
                stop = min(start + batch_size, int(whole.shape[0]))
                yield whole[start:stop], f"images[{start}:{stop}]"

        return split_tensor(), int(whole.shape[0])
    if isinstance(images, np.ndarray):
        array = _as_array(images, "images")
        _check_ndim(array.shape, "images")

        def split_array() -> Iterator[tuple[torch.Tensor, str]]:
            for start in range(0, array.shape[0], batch_size):
                stop = min(start + batch_size, int(array.shape[0]))
                name = f"images[{start}:{stop}]"
                yield _as_tensor(array[start:stop], name), name  # converted per batch

        return split_array(), int(array.shape[0])
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise LinearCNNInputError(
            f"images of type {type(images).__name__}: expected an (N, C, H, W) array or tensor, "
            f"or an iterable of such batches"
        )

    def stream() -> Iterator[tuple[torch.Tensor, str]]:
        for index, batch in enumerate(images):
            tensor = _as_tensor(batch, f"batch {index} of images")
            for start in range(0, tensor.shape[0], batch_size):
                yield tensor[start : start + batch_size], f"batch {index} of images"

    return stream(), None


# ------------------------------------------------------------------------------ the core
class _MomentAccumulator:
    """Running float64 sums of pixel-neighbour products (the shift structure of patch moments).

    For an anchor pixel q = (y, x) and an offset (Dy, Dx), Dy in [0, k), Dx in (-k, k), the map
    T[Dy, q, c1, (Dx, c2)] = sum_images I[c1, q] I[c2, q + (Dy, Dx)]. The patch moment entry
    ((c1, dy1, dx1), (c2, dy1+Dy, dx1+Dx)) is the sum of that map over the anchors
    q in [dy1, dy1+H-k] x [dx1, dx1+W-k]; the rectangle sums are `rects`.
    """

    def __init__(self, channels: int, height: int, width: int, kernel: int, device: torch.device,
                 shift: torch.Tensor, map_budget: int) -> None:
        self.c, self.h, self.w, self.k = channels, height, width, kernel
        self.device = device
        self.shift = shift  # (C,) float64, subtracted from every pixel of its channel
        self.shifted = bool(torch.any(shift != 0))
        self.span = 2 * kernel - 1  # horizontal offsets Dx = -(k-1) .. k-1
        pixels = height * width
        map_shape = (kernel, pixels, channels, self.span * channels)
        self.keep_maps = 8 * math.prod(map_shape) <= map_budget
        self.maps = torch.zeros(
            map_shape if self.keep_maps else (0,), dtype=torch.float64, device=device
        )  # (k, HW, C, (2k-1)C), or empty when reduced after every chunk
        self.rects = torch.zeros(
            (kernel, kernel, kernel, channels, self.span, channels), dtype=torch.float64, device=device
        )  # (dy1, dx1, Dy, c1, Dx + k-1, c2)
        self.pixel_sums = torch.zeros((height, width, channels), dtype=torch.float64, device=device)  # (H, W, C)
        self.num_images = 0

    def add(self, batch: torch.Tensor) -> bool:
        """Add a (n, C, H, W) batch (any real dtype; on this device or the CPU).

        Returns False, adding nothing, when the batch holds NaN or Inf (or overflows float64).
        """
        n = int(batch.shape[0])
        c, h, w, k = self.c, self.h, self.w, self.k
        pixels, pad = h * w, k - 1
        # Pixel-major layout with the images last, padded by k-1 zero pixels at both ends so
        # that every neighbour window below stays inside the buffer.
        buf = torch.empty((pixels + 2 * pad, c, n), dtype=torch.float64, device=self.device)  # (HW+2pad, C, n)
        buf[:pad].zero_()
        buf[pad + pixels :].zero_()
        body = buf[pad : pad + pixels]  # (HW, C, n)
        body.view(h, w, c, n).copy_(batch.permute(2, 3, 1, 0))  # (H, W, C, n): transpose + float64 in one pass
        if self.shifted:
            body -= self.shift.view(1, c, 1)
        chunk_sums = body.sum(dim=2)  # (HW, C)
        # Host sync (CUDA): a NaN/Inf pixel makes its pixel sum non-finite; checked per chunk so
        # bad data fails before the whole pass (cheap: HW*C values).
        if not bool(torch.isfinite(chunk_sums).all()):
            return False
        self.pixel_sums += chunk_sums.view(h, w, c)
        row = c * n  # elements per pixel in buf
        for dy in range(k):
            anchors = (h - dy) * w  # anchors whose row y + dy is inside the image
            left = body[:anchors]  # (anchors, C, n)
            # Neighbours of anchor q: pixels q + dy*W - (k-1) .. q + dy*W + (k-1), i.e. a sliding
            # window of 2k-1 consecutive pixels; as_strided shares memory (windows overlap).
            right = buf.as_strided(
                (anchors, self.span * c, n), (row, n, 1), buf.storage_offset() + dy * w * row
            )  # (anchors, (2k-1)C, n)
            if self.keep_maps:
                self.maps[dy, :anchors].baddbmm_(left, right.transpose(1, 2))  # (anchors, C, (2k-1)C)
            else:
                products = torch.zeros((pixels, c, self.span * c), dtype=torch.float64, device=self.device)
                torch.bmm(left, right.transpose(1, 2), out=products[:anchors])  # (anchors, C, (2k-1)C)
                self.rects[:, :, dy] += self._rectangle_sums(products).view(k, k, c, self.span, c)
        self.num_images += n
        return True

    def merge(self, other: _MomentAccumulator) -> None:
        """Add another accumulator's sums (same shape, shift and device) into this one."""
        self.maps += other.maps
        self.rects += other.rects
        self.pixel_sums += other.pixel_sums
        self.num_images += other.num_images

    def _rectangle_sums(self, grid: torch.Tensor) -> torch.Tensor:
        """(HW, ...) per-anchor values -> (k, k, ...) sums over the anchor rectangles (dy1, dx1)."""
        h, w, k = self.h, self.w, self.k
        rows, cols = h - k + 1, w - k + 1
        values = grid.view(h, w, -1)  # (H, W, F)
        cum = torch.zeros((h + 1, w, values.shape[-1]), dtype=torch.float64, device=self.device)
        torch.cumsum(values, dim=0, out=cum[1:])
        row_sums = cum[rows : rows + k] - cum[0:k]  # (k_dy1, W, F): rows dy1 .. dy1+rows-1
        cum2 = torch.zeros((k, w + 1, values.shape[-1]), dtype=torch.float64, device=self.device)
        torch.cumsum(row_sums, dim=1, out=cum2[:, 1:])
        sums = cum2[:, cols : cols + k] - cum2[:, 0:k]  # (k_dy1, k_dx1, F)
        return sums.reshape((k, k) + tuple(grid.shape[1:]))

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(sum over patches of p p^T (d, d), sum of p (d,), number of patches), shifted data."""
        c, k = self.c, self.k
        rects = self.rects.clone()
        if self.keep_maps:
            for dy in range(k):
                rects[:, :, dy] += self._rectangle_sums(self.maps[dy]).view(k, k, c, self.span, c)
        rects_np = rects.cpu().numpy()  # host sync: the (k, k, k, C, 2k-1, C) sums, once per run
        # Scatter: entry (c1, dy1, dx1, c2, dy1+Dy, dx1+Dx) for Dy > 0, or Dy == 0 and Dx >= 0
        # (each unordered pair of patch entries once), then mirror.
        dy1, dx1, dy2, dx2 = np.meshgrid(*(np.arange(k),) * 4, indexing="ij")
        keep = (dy2 > dy1) | ((dy2 == dy1) & (dx2 >= dx1))
        dy1, dx1, dy2, dx2 = dy1[keep], dx1[keep], dy2[keep], dx2[keep]
        blocks = rects_np[dy1, dx1, dy2 - dy1, :, dx2 - dx1 + k - 1, :]  # (pairs, C1, C2)
        moment = np.zeros((c, k, k, c, k, k))
        # (numpy puts the advanced-index axis, pairs, first in these assignments)
        moment[:, dy1, dx1, :, dy2, dx2] = blocks  # (pairs, c1, c2)
        moment[:, dy2, dx2, :, dy1, dx1] = blocks.transpose(0, 2, 1)  # (pairs, c2, c1)
        d = c * k * k
        moment = moment.reshape(d, d)
        moment = 0.5 * (moment + moment.T)  # exact up to the rounding of the diagonal blocks
        # Sum of patches: per channel and offset, the pixel sums over the anchor rectangle.
        pixel_rects = self._rectangle_sums(self.pixel_sums.view(self.h * self.w, c)).cpu().numpy()  # (k, k, C)
        patch_sum = pixel_rects.transpose(2, 0, 1).reshape(d)  # (C, k, k) order
        count = self.num_images * (self.h - k + 1) * (self.w - k + 1)
        return moment, patch_sum, count


@contextlib.contextmanager
def _progress_bar(total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_images)`: a rich progress bar on stderr, or a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("patch statistics"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("patches", total=total)
        yield lambda n: bar.advance(task, n)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LinearCNNInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def patch_stats(
    images: Any,
    kernel_size: int,
    *,
    centered: bool = False,
    batch_size: int = 512,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> PatchStats:
    """Exact second moments of all stride-1 `C x k x k` patches of `images`, eigen-decomposed.

    images: an (N, C, H, W) numpy array or torch tensor (any real dtype, any device), or an
        iterable of such batches (all with the same C, H, W), read once; at most `batch_size`
        images are converted to float64 at a time, so memory does not grow with N.
    kernel_size: k (patches are k x k, valid positions only: (H-k+1)(W-k+1) per image).
    centered: False (default): decompose E[p p^T]; True: the covariance E[p p^T] - m m^T
        (see the module docstring for why uncentred is the default and what the difference is).
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; arithmetic is float64
        on every device. progress: show a progress bar on stderr.

    The moments are normalised by the number of patches M (not M - 1). Eigenvalues come from
    `numpy.linalg.eigh` of the symmetrised matrix, sorted descending and clipped at 0 from below.
    Warns (and stays finite) when there are fewer patches than dimensions or the matrix is
    rank-deficient (e.g. constant images). Raises LinearCNNInputError for a kernel larger than
    the images, kernel_size < 1, a wrong number of dimensions, no images, or NaN/Inf pixels.
    """
    kernel = _check_int(kernel_size, "kernel_size", 1)
    step = _check_int(batch_size, "batch_size", 1)
    if not isinstance(centered, (bool, np.bool_)):
        raise LinearCNNInputError(f"centered must be True or False, got {centered!r}")
    target = resolve_device(device)
    batches, total = _batches(images, step)
    return _stream_stats(batches, total, kernel, centered=bool(centered), batch_size=step, device=target,
                         progress=bool(progress))


class _Failure(Exception):
    """A chunk held NaN/Inf or overflowed (raised in a worker; becomes LinearCNNInputError)."""

    def __init__(self, chunk: torch.Tensor, where: str) -> None:
        super().__init__(where)
        self.chunk, self.where = chunk, where

    def as_input_error(self) -> LinearCNNInputError:
        bad = int((~torch.isfinite(self.chunk.to(torch.float64))).sum())
        if bad == 0:
            return LinearCNNInputError(f"{self.where}: pixel sums overflow float64; expected pixel values far below 1e300")
        return LinearCNNInputError(f"{self.where} contain {bad} NaN or Inf pixel value(s); expected finite pixels")


class _Workers:
    """Feeds chunks to accumulators: inline (one thread, CUDA) or round-robin to CPU threads.

    Why threads of our own: the per-pixel products are many small matrix products, and torch's
    intra-op parallelism runs each as a separate parallel region with a barrier; on a busy
    machine one descheduled thread stalls every barrier (measured: 7x slower than one thread
    at load 3 on 2 cores). Instead each worker thread owns an accumulator and takes every T-th
    chunk, with torch limited to one intra-op thread for the duration; the chunks each thread
    sums, and so the rounding, do not depend on timing (deterministic for a given T).
    """

    def __init__(self, make: Callable[[], _MomentAccumulator], threads: int) -> None:
        self.accumulators: list[_MomentAccumulator] = [make() for _ in range(threads)]
        self.threads = threads
        self.count = 0
        self.queues: list[queue.Queue] = []
        self.errors: list[Exception | None] = [None] * threads
        self.workers: list[threading.Thread] = []
        if threads > 1:
            for index in range(threads):
                inbox: queue.Queue = queue.Queue(maxsize=2)  # bounds the chunks held in memory
                worker = threading.Thread(target=self._work, args=(index, inbox), daemon=True)
                self.queues.append(inbox)
                self.workers.append(worker)
                worker.start()

    def _work(self, index: int, inbox: queue.Queue) -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            if self.errors[index] is not None:
                continue  # keep draining so the producer never blocks
            chunk, name = item
            try:
                if not self.accumulators[index].add(chunk):
                    raise _Failure(chunk, name)
            except Exception as exc:  # noqa: BLE001 - stored, re-raised in the producer thread
                self.errors[index] = exc

    def add(self, chunk: torch.Tensor, name: str) -> None:
        if self.threads == 1:
            if not self.accumulators[0].add(chunk):
                raise _Failure(chunk, name)
        else:
            self.queues[self.count % self.threads].put((chunk, name))
            self._raise_first_error()
        self.count += 1

    def _raise_first_error(self) -> None:
        for error in self.errors:
            if error is not None:
                self.close()
                raise error

    def close(self) -> None:
        for inbox in self.queues:
            inbox.put(None)
        for worker in self.workers:
            worker.join()
        self.queues, self.workers = [], []

    def finish(self) -> _MomentAccumulator:
        """Wait for the workers and merge their sums into one accumulator."""
        self.close()
        self._raise_first_error()
        total = self.accumulators[0]
        for other in self.accumulators[1:]:
            total.merge(other)
        return total


def _stream_stats(batches: Iterator[tuple[torch.Tensor, str]], total: int | None, kernel: int, *,
                  centered: bool, batch_size: int, device: torch.device, progress: bool) -> PatchStats:
    """The streaming pass behind `patch_stats` (arguments already checked)."""
    target, step = device, batch_size
    threads = max(1, torch.get_num_threads()) if target.type == "cpu" else 1
    workers: _Workers | None = None
    shape: tuple[int, int, int] | None = None
    seen = 0  # images before the current batch
    try:
        if threads > 1:
            torch.set_num_threads(1)  # restored below; see _Workers
        with _progress_bar(total, progress) as advance:
            for batch, name in batches:
                if batch.shape[0] == 0:
                    continue
                if shape is None:
                    shape = tuple(int(v) for v in batch.shape[1:])  # (C, H, W)
                    _check_kernel_fits(kernel, shape)
                elif tuple(batch.shape[1:]) != shape:
                    raise LinearCNNInputError(
                        f"{name} has images of shape {tuple(batch.shape[1:])}; expected {shape} like the first batch"
                    )
                if workers is None:
                    c, h, w = shape
                    shift = (
                        batch.to(device=target, dtype=torch.float64).mean(dim=(0, 2, 3))
                        if centered else torch.zeros(c, dtype=torch.float64, device=target)
                    )  # (C,)
                    if not bool(torch.isfinite(shift).all()):  # host sync, once
                        raise _Failure(batch, f"images 0 to {int(batch.shape[0]) - 1} (in {name})")
                    workers = _Workers(functools.partial(
                        _MomentAccumulator, c, h, w, kernel, target, shift, _MAP_BUDGET_BYTES // threads
                    ), threads)
                # CPU: chunks sized for the cache, converted straight from the input; CUDA: one copy
                # of the batch to the device in its own dtype, converted to float64 in `add`.
                chunk = _chunk_images(shape, kernel, target, step)
                source = batch if target.type == "cpu" else batch.to(device=target)
                for start in range(0, source.shape[0], chunk):
                    part = source[start : start + chunk]
                    first, last = seen + start, seen + start + int(part.shape[0]) - 1
                    workers.add(part, f"images {first} to {last} (in {name})")
                seen += int(batch.shape[0])
                advance(int(batch.shape[0]))
            if workers is None:
                raise LinearCNNInputError(
                    "images: no images given (0 images); expected at least one (N, C, H, W) image"
                )
            accumulator = workers.finish()
    except _Failure as failure:
        raise failure.as_input_error() from None
    finally:
        if workers is not None:
            workers.close()
        if threads > 1:
            torch.set_num_threads(threads)
    moment_sum, patch_sum, count = accumulator.result()
    shift_patch = np.repeat(accumulator.shift.cpu().numpy(), kernel * kernel)  # (d,) in (C, k, k) order
    shifted_mean = patch_sum / count  # (d,)
    shifted_moment = moment_sum / count  # (d, d)
    mean = shifted_mean + shift_patch
    if centered:
        matrix = shifted_moment - np.outer(shifted_mean, shifted_mean)  # covariance, shift-invariant
    else:
        matrix = shifted_moment  # the shift is zero when not centred
    matrix = 0.5 * (matrix + matrix.T)
    if not np.all(np.isfinite(matrix)):
        raise LinearCNNInputError("images: patch moments overflow float64; expected pixel values below ~1e150")
    c, h, w = shape  # type: ignore[misc]
    eigenvalues, eigenvectors = sorted_psd_eigh(matrix)
    _warn_if_degenerate(eigenvalues, count, c * kernel * kernel)
    return PatchStats(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        second_moment=matrix,
        mean=mean,
        num_patches=int(count),
        channels=c,
        kernel_size=kernel,
        centered=bool(centered),
        num_images=accumulator.num_images,
        image_size=(h, w),
        extra={"versions": versions()},
    )


def _chunk_images(shape: tuple[int, int, int], kernel: int, device: torch.device, batch_size: int) -> int:
    """Images per internal chunk: the whole batch on CUDA; on CPU, enough images that the k rows
    of pixels the neighbour products slide over stay in the L2 cache (at least 16 images, so the
    per-pixel matrix products are not degenerate)."""
    if device.type != "cpu":
        return batch_size
    c, _, w = shape
    return max(1, min(batch_size, max(16, _CPU_WINDOW_VALUES // (kernel * w * c))))


def _check_kernel_fits(kernel: int, shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    if c < 1 or h < 1 or w < 1:
        raise LinearCNNInputError(f"images have shape (N, {c}, {h}, {w}); expected C, H and W >= 1")
    if kernel > h or kernel > w:
        raise LinearCNNInputError(
            f"kernel_size {kernel} is larger than the {h}x{w} images; expected kernel_size <= {min(h, w)}"
        )


def _warn_if_degenerate(eigenvalues: np.ndarray, num_patches: int, d: int) -> None:
    if num_patches < d:
        warnings.warn(
            f"only {num_patches} patches for {d} dimensions: the patch second-moment matrix has rank "
            f"at most {num_patches}, so trailing eigenvalues are 0 and their eigenvectors arbitrary",
            stacklevel=3,
        )
        return
    top = float(eigenvalues[0]) if eigenvalues.size else 0.0
    if top <= 0.0:
        warnings.warn("all patch moments are zero (constant images?); eigenvectors are arbitrary", stacklevel=3)
        return
    tolerance = d * np.finfo(np.float64).eps * top
    rank = int(np.sum(eigenvalues > tolerance))
    if rank < d:
        warnings.warn(
            f"the patch second-moment matrix is rank-deficient (numerical rank {rank} of {d}; "
            f"constant or duplicated channels?); eigenvectors of the zero eigenvalues are arbitrary",
            stacklevel=3,
        )


def dataset_patch_stats(
    dataset: ImageDataset,
    kernel_size: int,
    *,
    centered: bool = False,
    batch_size: int = 512,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> PatchStats:
    """Patch statistics of a data set normalised per channel exactly as training does.

    Uses `dataset.channel_stats()` and `linearcnn.data.normalize_images` batch by batch (no
    normalised copy of the whole set) and records the mean/std and `dataset.spec` in the result.
    The other arguments are those of `patch_stats`.
    """
    from linearcnn.data import normalize_images

    kernel = _check_int(kernel_size, "kernel_size", 1)
    step = _check_int(batch_size, "batch_size", 1)
    if not isinstance(centered, (bool, np.bool_)):
        raise LinearCNNInputError(f"centered must be True or False, got {centered!r}")
    target = resolve_device(device)
    images = np.asarray(dataset.images)
    if images.ndim != 4:
        raise LinearCNNInputError(f"data set {dataset.spec!r}: images have shape {images.shape}; expected (N, C, H, W)")
    if images.shape[0] == 0:
        raise LinearCNNInputError(f"data set {dataset.spec!r} is empty; expected at least one image")
    _check_kernel_fits(kernel, (int(images.shape[1]), int(images.shape[2]), int(images.shape[3])))
    mean, std = dataset.channel_stats()  # (C,), (C,) float64

    def normalised() -> Iterator[tuple[torch.Tensor, str]]:
        for start in range(0, images.shape[0], step):
            stop = min(start + step, int(images.shape[0]))
            batch = normalize_images(images[start:stop], mean, std)  # (n, C, H, W) float32
            yield torch.from_numpy(batch), f"images[{start}:{stop}] of {dataset.spec!r}"

    stats = _stream_stats(normalised(), int(images.shape[0]), kernel, centered=bool(centered), batch_size=step,
                          device=target, progress=bool(progress))
    stats.channel_mean = np.asarray(mean, dtype=np.float64)
    stats.channel_std = np.asarray(std, dtype=np.float64)
    stats.data_spec = str(dataset.spec)
    return stats

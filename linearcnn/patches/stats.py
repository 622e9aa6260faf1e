"""The public face of the patch statistics: `PatchStats`, `patch_stats`, `dataset_patch_stats`,
and the patch geometry of an image (`patch_grid`, `mean_patches`).

The streaming pass is `linearcnn.patches._stream`, the file format `linearcnn.patches._stats_file`;
here the options are checked, the measured moments are eigen-decomposed
(`linearcnn._linalg.sorted_psd_eigh`, the one PSD eigen-decomposition) and recorded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from linearcnn._linalg import sorted_psd_eigh
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches._stats_file import read_stats_fields, write_stats_file
from linearcnn.records import versions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Iterable

    import torch

    from linearcnn.data import ImageDataset
    from linearcnn.patches._stream import PatchMoments


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

    def __repr__(self) -> str:
        """One line: patch shape, source, counts, centring and the top eigenvalues (not the arrays)."""
        top = ", ".join(f"{v:.4g}" for v in np.asarray(self.eigenvalues)[:3])
        source = f" of {self.data_spec!r}" if self.data_spec else ""
        images = f"{self.num_images:,} images, " if self.num_images else ""
        return (f"PatchStats({self.channels}x{self.kernel_size}x{self.kernel_size} patches{source} ({images}"
                f"{self.num_patches:,} patches), {'centred' if self.centered else 'uncentred'}; top eigenvalues {top}"
                f"{', ...' if self.dim > 3 else ''})")

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
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to a `.npz` file (no pickled objects), atomically."""
        write_stats_file(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchStats:
        """Read statistics written by `save`, checking every field (LinearCNNInputError if bad)."""
        return cls(**read_stats_fields(path))


def patch_grid(height: int, width: int, kernel_size: int, stride: int = 1) -> tuple[int, int]:
    """(rows, columns) of k x k patch locations in an H x W image at `stride`, no padding.

    Raises LinearCNNInputError for a kernel size or stride that is not a positive integer and for
    a kernel larger than the images.
    """
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1:
        raise LinearCNNInputError(f"kernel_size must be a positive integer, got {kernel_size!r}", parameter="kernel_size")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise LinearCNNInputError(f"stride must be a positive integer, got {stride!r}", parameter="stride")
    if kernel_size > height or kernel_size > width:
        raise LinearCNNInputError(
            f"kernel_size {kernel_size} is larger than the images ({height}x{width})", parameter="kernel_size"
        )
    return (height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1


def mean_patches(images: torch.Tensor, kernel_size: int, stride: int = 1) -> torch.Tensor:
    """pbar(x): the mean of each image's k x k patches at `stride`, flattened in (C, k, k) order.

    images (N, C, H, W) -> (N, C*k*k), in the images' dtype. Entry (c, i, j) is the mean of
    x[c, i + stride*a, j + stride*b] over all patch locations (a, b), so that
    `conv2d(x, w, stride=stride).mean((2, 3))` equals `pbar(x) @ w.reshape(K, -1).T`; with
    stride 1, `LinearCNN(x) = mean_k(w_k) . pbar(x)` exactly, so this is the linear model's
    feature map (PAPER.md section 2). Raises LinearCNNInputError as `patch_grid` does.
    """
    import torch

    batch, channels, height, width = images.shape
    out_h, out_w = patch_grid(height, width, kernel_size, stride)
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    columns = [
        images[:, :, i : i + span_h : stride, j : j + span_w : stride].mean(dim=(2, 3))  # (N, C)
        for i in range(kernel_size)
        for j in range(kernel_size)
    ]
    return torch.stack(columns, dim=2).reshape(batch, channels * kernel_size * kernel_size)  # (N, C*k*k)


def patch_stats(
    images: ArrayLike | torch.Tensor | Iterable[ArrayLike | torch.Tensor],
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
    from linearcnn.patches._inputs import batches, check_options
    from linearcnn.patches._stream import stream_moments

    kernel, step, centred, target = check_options(kernel_size, batch_size, centered, device)
    image_batches, total = batches(images, step)
    moments = stream_moments(image_batches, total, kernel, centered=centred, batch_size=step, device=target,
                             progress=bool(progress))
    return _stats_from_moments(moments, kernel, centred)


def _stats_from_moments(moments: PatchMoments, kernel: int, centered: bool) -> PatchStats:
    """Eigen-decompose the measured matrix and record it with its provenance."""
    c, h, w = moments.shape
    eigenvalues, eigenvectors = sorted_psd_eigh(moments.matrix)
    _warn_if_degenerate(eigenvalues, moments.num_patches, c * kernel * kernel)
    return PatchStats(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        second_moment=moments.matrix,
        mean=moments.mean,
        num_patches=moments.num_patches,
        channels=c,
        kernel_size=kernel,
        centered=centered,
        num_images=moments.num_images,
        image_size=(h, w),
        extra={"versions": versions()},
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
    import torch

    from linearcnn.data import normalize_images
    from linearcnn.patches._inputs import check_kernel_fits, check_options
    from linearcnn.patches._stream import stream_moments

    kernel, step, centred, target = check_options(kernel_size, batch_size, centered, device)
    images = np.asarray(dataset.images)
    if images.ndim != 4:
        raise LinearCNNInputError(f"data set {dataset.spec!r}: images have shape {images.shape}; expected (N, C, H, W)")
    if images.shape[0] == 0:
        raise LinearCNNInputError(f"data set {dataset.spec!r} is empty; expected at least one image")
    check_kernel_fits(kernel, (int(images.shape[1]), int(images.shape[2]), int(images.shape[3])))
    mean, std = dataset.normalization_stats()  # (C,), (C,) float64

    def normalised() -> Iterator[tuple[torch.Tensor, str]]:
        for start in range(0, images.shape[0], step):
            stop = min(start + step, int(images.shape[0]))
            batch = normalize_images(images[start:stop], mean, std)  # (n, C, H, W) float32
            yield torch.from_numpy(batch), f"images[{start}:{stop}] of {dataset.spec!r}"

    moments = stream_moments(normalised(), int(images.shape[0]), kernel, centered=centred, batch_size=step,
                             device=target, progress=bool(progress))
    stats = _stats_from_moments(moments, kernel, centred)
    stats.channel_mean = np.asarray(mean, dtype=np.float64)
    stats.channel_std = np.asarray(std, dtype=np.float64)
    stats.data_spec = str(dataset.spec)
    return stats


__all__ = ["PatchStats", "dataset_patch_stats", "mean_patches", "patch_grid", "patch_stats"]

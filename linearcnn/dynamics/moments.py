"""The moments of the linear model, A = (1/N) sum_x pbar(x) pbar(x)^T and b = (1/N) sum_x pbar(x) y(x),
in one streamed float64 pass, and J, the number of patch locations (`linearcnn.dynamics`)."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from linearcnn.device import resolve_device
from linearcnn.errors import LinearCNNInputError
from linearcnn.patches import mean_patches, patch_grid

DEFAULT_BATCH_SIZE = 1024


def num_locations(height: int, width: int, kernel_size: int, stride: int = 1) -> int:
    """J: the number of k x k patch locations of an H x W image at `stride` (no padding)."""
    out_h, out_w = patch_grid(height, width, kernel_size, stride)
    return out_h * out_w


def moment_matrices(
    images: ArrayLike | torch.Tensor,
    kernel_size: int,
    targets: ArrayLike | torch.Tensor,
    *,
    stride: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """The moments of the linear model, in one streamed pass with float64 accumulation.

    Args:
        images: (N, C, H, W) numpy array or tensor (already normalised as for training).
        kernel_size: k.
        targets: (N,) regression targets y(x), or (N, m) for the multi-output model.
        stride: patch stride (1 for the model; k gives non-overlapping patches).
        batch_size: images per chunk moved to `device` and converted to float64.
        device: "auto" (CUDA when available), "cpu", "cuda", ...

    Returns:
        A (d, d) = (1/N) sum_x pbar(x) pbar(x)^T, b (d,) or (d, m) = (1/N) sum_x pbar(x) y(x)^T,
        both float64 numpy arrays, and N. d = C k^2.
    """
    images_t = torch.as_tensor(images)
    targets_t = torch.as_tensor(targets)
    if images_t.ndim != 4:
        raise LinearCNNInputError(f"images have shape {tuple(images_t.shape)}; expected (N, C, H, W)")
    n, channels, height, width = images_t.shape
    if n == 0:
        raise LinearCNNInputError("images are empty; expected at least one image")
    if targets_t.ndim not in (1, 2) or targets_t.shape[0] != n:
        raise LinearCNNInputError(
            f"targets have shape {tuple(targets_t.shape)}; expected ({n},) or ({n}, m) for {n} images"
        )
    patch_grid(height, width, kernel_size, stride)
    if int(batch_size) < 1:
        raise LinearCNNInputError(f"batch_size must be a positive integer, got {batch_size}", parameter="batch_size")
    dev = resolve_device(device)
    d = channels * kernel_size * kernel_size
    second = torch.zeros(d, d, dtype=torch.float64, device=dev)
    cross = torch.zeros((d,) + tuple(targets_t.shape[1:]), dtype=torch.float64, device=dev)
    for start in range(0, n, int(batch_size)):
        chunk = images_t[start : start + batch_size].to(device=dev, dtype=torch.float64)  # (B, C, H, W)
        y = targets_t[start : start + batch_size].to(device=dev, dtype=torch.float64)  # (B,) or (B, m)
        pbar = mean_patches(chunk, kernel_size, stride)  # (B, d)
        second += pbar.T @ pbar  # (d, d)
        cross += pbar.T @ y  # (d,) or (d, m)
    # the one device->host sync of the pass
    return (second / n).cpu().numpy(), (cross / n).cpu().numpy(), int(n)



__all__ = ["DEFAULT_BATCH_SIZE", "moment_matrices", "num_locations"]

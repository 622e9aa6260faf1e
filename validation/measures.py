"""The few measurements the validation needs that the package does not provide.

Everything else (energy profiles, similarity, fits, whitening indicators, exact dynamics) is
called from `linearcnn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray


def mean_std(values: Sequence[float | None] | NDArray[np.float64]) -> dict[str, Any]:
    """{"mean", "std" (population, over the values), "n", "values"}; NaNs are left out of mean/std."""
    array = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "n": int(finite.size),
        "values": [None if not np.isfinite(v) else float(v) for v in array],
    }


def series(x: ArrayLike, values: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """{"x", "mean", "std"}: mean and (population) std over axis 0 (seeds) of values (seeds, points),
    against x; missing values (None, NaN) are left out."""
    array = np.asarray(values, dtype=float)
    return {"x": np.asarray(x, dtype=float), "mean": np.nanmean(array, axis=0), "std": np.nanstd(array, axis=0)}


def output_autocorrelation(filters: np.ndarray, images: np.ndarray, lags: Sequence[int]) -> list[float]:
    """Normalised spatial autocorrelation of a filter bank's output, summed over filters.

    With o_k = w_k * x (valid convolution of the normalised images), returns for each lag L
    R(L) / R(0), R(L) = mean over images, filters and positions of o_k(p) o_k(p + L), averaged
    over a horizontal and a vertical shift by L. A whitening bank (sum_k |W_k(f)|^2 ~ 1 / power
    spectrum, PAPER.md section 3) makes the summed output white: R(L) / R(0) -> 0 for L > 0.
    filters (K, C, k, k), images (N, C, H, W).
    """
    w = torch.as_tensor(filters, dtype=torch.float64)  # (K, C, k, k)
    x = torch.as_tensor(images, dtype=torch.float64)  # (N, C, H, W)
    out = F.conv2d(x, w)  # (N, K, H', W')
    r0 = float((out * out).mean())
    values = []
    for lag in lags:
        horizontal = (out[..., :, :-lag] * out[..., :, lag:]).mean()
        vertical = (out[..., :-lag, :] * out[..., lag:, :]).mean()
        values.append(float(0.5 * (horizontal + vertical)) / r0 if r0 > 0 else float("nan"))
    return values


def input_autocorrelation(images: np.ndarray, lags: Sequence[int]) -> list[float]:
    """The same autocorrelation for the images themselves (the identity filter), for reference."""
    x = torch.as_tensor(images, dtype=torch.float64)  # (N, C, H, W)
    channels = x.shape[1]
    identity = torch.zeros(channels, channels, 1, 1, dtype=torch.float64)
    identity[range(channels), range(channels)] = 1.0
    return output_autocorrelation(identity.numpy(), x.numpy(), lags)

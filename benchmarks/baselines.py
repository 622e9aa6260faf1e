"""Our own implementation of the baseline the benchmarks compare against: the authors' method.

The authors' code (Chowers & Weiss, ICML 2023) measures the patch PCA by materialising every
stride-1 k x k patch of the images as one float64 matrix and calling `torch.pca_lowrank` on it,
and fits the linear-CNN formula by trying 19,960 step counts (10,000 to 5,000,000 in steps of
250) at a fixed learning rate 1e-7, keeping the best correlation. These functions do the same, so
a benchmark times both ways in one process and compares their results (PAPER.md section 5).

    python benchmarks/baselines.py 2000     # times both baselines on 2,000 synthetic images
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

FIT_LR = 1e-7
FIT_STEPS = range(10_000, 5_000_000, 250)  # 19,960 candidates


def natural_like_images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, channels, size, size) float32 images with a 1/f amplitude spectrum and random phases.

    A synthetic stand-in for natural photographs (their amplitude falls roughly as 1/f), for timing.
    """
    generator = torch.Generator().manual_seed(int(seed))
    freq = torch.fft.fftfreq(size)  # (size,)
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2).clamp(min=1.0 / size)  # (size, size)
    spectrum = torch.randn(n, channels, size, size, generator=generator, dtype=torch.complex64) / radius
    return torch.fft.ifft2(spectrum).real.to(torch.float32)  # (n, C, size, size)


def baseline_patch_pca(images: torch.Tensor, kernel_size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values (d,), components (d, d)) of all stride-1 patches, the baseline's way.

    Every patch is unfolded into one (N * locations, d) float64 matrix: memory grows with the data.
    """
    channels = images.shape[1]
    patches = images.unfold(1, channels, 1).unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (N, 1, h, w, C, k, k)
    matrix = patches.to(torch.float64).flatten(-3).flatten(0, -2)  # (N * h * w, d)
    _, singular, components = torch.pca_lowrank(matrix, q=channels * kernel_size * kernel_size)
    return singular, components


def baseline_fit(profile: ArrayLike, singular_values: ArrayLike, num_images: int) -> tuple[float, int, NDArray[np.float64] | None]:
    """Grid search over step counts at lr 1e-7, the baseline's way: (best correlation, its step, its profile).

    The formula at step t is |(1 - (1 - x)^t) / x * s| with x = lr s^2 / (2 N), normalised by its
    maximum; the correlation is numpy's Pearson coefficient with `profile`.
    """
    target = np.asarray(profile, dtype=np.float64)
    s = torch.as_tensor(np.asarray(singular_values, dtype=np.float64))  # (d,)
    x = FIT_LR * s**2 / (2 * num_images)  # (d,)
    best, best_step, best_profile = 0.0, 0, None
    for step in FIT_STEPS:
        candidate = torch.abs((1 - torch.pow(1 - x, step)) / x * s)  # (d,)
        candidate = (candidate / candidate.max()).numpy()
        correlation = float(np.corrcoef(candidate, target)[0, 1])
        if correlation > best:
            best, best_step, best_profile = correlation, step, candidate
    return best, best_step, best_profile


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    images = natural_like_images(count)
    started = time.perf_counter()
    singular, _ = baseline_patch_pca(images)
    pca_seconds = time.perf_counter() - started
    profile = np.abs(np.random.default_rng(0).normal(size=singular.numel()))
    started = time.perf_counter()
    correlation, step, _ = baseline_fit(profile, singular, count)
    print(
        f"baseline patch PCA, {count} images: {pca_seconds:.2f} s; "
        f"baseline fit: {time.perf_counter() - started:.2f} s (correlation {correlation:.4f} at step {step})"
    )

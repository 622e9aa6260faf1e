"""A checkpoint's first layer, measured against patch statistics: what `linearcnn profile | fit |
compare` compute, for any caller.

`measure_checkpoint` loads the first layer (optionally minus its initial weights) and the patch
statistics of matching shape (from a saved file or computed from a data set); the rest is the
energy module (`energy_profile`, `whitening_indicators`, `similarity_matrix`) and the fit
(`fit_measurement`, whose `at_bound` / `degenerate` flags and warnings every output carries).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.checkpoints import FirstLayer
    from linearcnn.fit import FitResult
    from linearcnn.patches import PatchStats

__all__ = ["Measurement", "compare_measurements", "fit_measurement", "load_patch_stats", "measure_checkpoint"]


@dataclass
class Measurement:
    """One checkpoint's first layer, measured against patch statistics."""

    layer: FirstLayer
    weights: NDArray[np.float64]  # (K, C, k, k), init subtracted when init_subtracted
    init_subtracted: bool
    stats: PatchStats


def load_patch_stats(
    data: str, channels: int, kernel: int, *, centered: bool = False, device: str = "auto", limit: int | None = None,
    stats_file: str | Path | None = None, what: str = "the layer", progress: bool = False,
) -> PatchStats:
    """Patch statistics of `channels` x `kernel` x `kernel` patches: read from `stats_file` (checked to
    match), or computed from the data set `data`. `what` names the layer in error messages."""
    from linearcnn.patches import PatchStats, dataset_patch_stats

    if stats_file is not None:
        stats = PatchStats.load(stats_file)
        if stats.channels != channels or stats.kernel_size != kernel:
            raise LinearCNNInputError(
                f"{what} has {channels}x{kernel}x{kernel} patches but stats_file {stats_file} holds "
                f"{stats.channels}x{stats.kernel_size}x{stats.kernel_size} statistics",
                parameter="stats_file",
            )
        return stats
    from linearcnn.data import load_dataset

    dataset = load_dataset(data, limit=limit)
    _, c, h, w = dataset.images.shape
    if c != channels:
        raise LinearCNNInputError(
            f"{what} expects {channels} input channel(s) but data {data!r} has {c}; expected a data set with {channels}",
            parameter="data",
        )
    if kernel > min(h, w):
        raise LinearCNNInputError(f"{what} has kernel {kernel}x{kernel}, larger than the {h}x{w} images of {data!r}")
    return dataset_patch_stats(dataset, kernel, centered=centered, device=device, progress=progress)


def measure_checkpoint(
    checkpoint: str | Path, *, data: str = "builtin", layer: str | None = None, init: bool = False,
    init_checkpoint: str | Path | None = None, unsafe_load: bool = False, centered: bool = False, device: str = "auto",
    limit: int | None = None, stats_file: str | Path | None = None,
    stats_cache: MutableMapping[tuple[int, int], PatchStats] | None = None, progress: bool = False,
) -> Measurement:
    """The first layer of `checkpoint` and the patch statistics to measure it against.

    init: subtract the initial weights stored in the checkpoint; init_checkpoint: subtract this
    checkpoint's weights of the same layer instead. stats_cache: patch statistics by (channels,
    kernel), shared between calls (several checkpoints on one data set). The other arguments go to
    `load_first_layer` and `load_patch_stats`.
    """
    from linearcnn.checkpoints import load_first_layer, load_init_weight

    first = load_first_layer(checkpoint, layer=layer, unsafe_load=unsafe_load)
    weights = np.asarray(first.weight, dtype=np.float64)  # (K, C, kh, kw)
    _, channels, kh, kw = weights.shape
    if kh != kw:
        raise LinearCNNInputError(f"layer {first.name!r} has a {kh}x{kw} kernel; only square kernels are supported")
    init_subtracted = False
    if init or init_checkpoint is not None:
        if init_checkpoint is not None:
            initial = load_init_weight(init_checkpoint, first.name, expected_shape=weights.shape, unsafe_load=unsafe_load)
        elif first.init_weight is not None:
            initial = np.asarray(first.init_weight, dtype=np.float64)
        else:
            raise LinearCNNInputError(
                f"init: {checkpoint} stores no initial weights for {first.name!r}; give init_checkpoint instead",
                parameter="init",
            )
        if initial.shape != weights.shape:
            raise LinearCNNInputError(
                f"init: initial weights have shape {tuple(initial.shape)} but layer {first.name!r} has {tuple(weights.shape)}",
                parameter="init",
            )
        weights = weights - initial
        init_subtracted = True
        if not np.any(weights):
            raise LinearCNNInputError(f"layer {first.name!r} equals its initial weights; nothing was learned to measure")
    key = (channels, kh)
    if stats_cache is not None and key in stats_cache:
        stats = stats_cache[key]
    else:
        stats = load_patch_stats(data, channels, kh, centered=centered, device=device, limit=limit, stats_file=stats_file,
                                 what=f"layer {first.name!r}", progress=progress)
        if stats_cache is not None:
            stats_cache[key] = stats
    return Measurement(layer=first, weights=weights, init_subtracted=init_subtracted, stats=stats)


def compare_measurements(
    measurements: Sequence[Measurement], names: Sequence[str]
) -> tuple[list[NDArray[np.float64]], NDArray[np.float64]]:
    """Energy profiles of several measured layers and their (n, n) Pearson correlation matrix.

    The layers must have one patch shape; `names` (one per measurement) appear in that error.
    """
    from linearcnn.energy import energy_profile, similarity_matrix

    shapes = {m.weights.shape[1:] for m in measurements}
    if len(shapes) > 1:
        listing = ", ".join(f"{c}: {'x'.join(map(str, m.weights.shape[1:]))}" for c, m in zip(names, measurements))
        raise LinearCNNInputError(f"first layers have different patch shapes ({listing}); profiles are not comparable")
    profiles = [energy_profile(m.weights, m.stats.eigenvectors) for m in measurements]
    return profiles, similarity_matrix(profiles)


def fit_measurement(
    measurement: Measurement, *, lr: float | None = None, raw: bool = False, bootstrap: int = 0, seed: int = 0
) -> FitResult:
    """The formula fit of a measured layer's energy profile (`linearcnn.fit.fit_filters`), with
    `bootstrap` resamples over its filters for 95% intervals. The result's `at_bound`,
    `degenerate` and `warnings` say when the fit is no evidence of agreement."""
    from linearcnn.fit import fit_filters

    stats = measurement.stats
    return fit_filters(measurement.weights, stats.eigenvalues, stats.eigenvectors, lr=lr, raw=raw,
                       bootstrap=bootstrap, seed=seed)

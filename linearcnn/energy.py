"""The energy profile of a first layer, profile similarity, and whitening indicators.

PAPER Sec. 1: for filters `w_1..w_K` (each flattened to d = C*k*k in `(C, k, k)` order) and the
patch-PCA eigenvectors `u_1..u_d`, the energy profile is

    e_i = sqrt( (1/K) sum_k (w_k . u_i)^2 ),        i = 1..d,

i.e. `e_i^2 = u_i^T (W^T W / K) u_i`: it depends on the filters only through `W^T W`, so it is
unchanged by permuting the filters or mixing them with any orthogonal K x K matrix, and scales
linearly when all filters are scaled. Two banks are compared by the Pearson correlation of their
profiles (`profile_similarity`), which also ignores a common scale.

    >>> import numpy as np
    >>> u = np.eye(4)                                   # eigenvectors = coordinate axes
    >>> w = np.array([[3.0, 0, 0, 0], [0, 4.0, 0, 0]])  # 2 filters with d = 4 inputs
    >>> energy_profile(w, u).round(4).tolist()          # sqrt(9/2), sqrt(16/2), 0, 0
    [2.1213, 2.8284, 0.0, 0.0]

This module holds the one Pearson correlation of the toolkit (`pearson`); the fit uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from linearcnn._arrays import finite_float64
from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.patches import PatchStats

__all__ = [
    "energy_profile",
    "pearson",
    "pooled_energy_profile",
    "profile_similarity",
    "similarity_matrix",
    "whitening_indicators",
]


def _describe_dim(d: int, channels: int | None, kernel: int | None) -> str:
    """'75 (3x5x5)' when the patch shape is known or can be inferred, else '75'."""
    if channels and kernel:
        return f"{d} ({channels}x{kernel}x{kernel})"
    if channels and d % channels == 0:
        side = math.isqrt(d // channels)
        if side * side * channels == d:
            return f"{d} ({channels}x{side}x{side})"
    return str(d)


def _filter_matrix(weights: ArrayLike) -> tuple[NDArray[np.float64], str, int | None]:
    """(K, d) float64 filters, a description of their shape, their channel count (if known)."""
    w = finite_float64(weights, "weights")
    if w.ndim == 4:
        k_out, channels, kh, kw = w.shape
        shape_text = f"{channels * kh * kw} inputs per filter ({channels}x{kh}x{kw})"
        return w.reshape(k_out, -1), shape_text, channels
    if w.ndim == 2:
        return w, f"{w.shape[1]} inputs per filter", None
    raise LinearCNNInputError(
        f"weights have shape {w.shape}; expected (K, C, k, k) filters or a (K, d) matrix"
    )


def _eigenvector_matrix(eigenvectors: ArrayLike | PatchStats) -> tuple[NDArray[np.float64], int | None, int | None]:
    """(d, d) eigenvectors from an array or PatchStats, with its (channels, kernel) if known."""
    channels: int | None
    kernel: int | None
    if hasattr(eigenvectors, "eigenvectors") and hasattr(eigenvectors, "kernel_size"):
        stats = cast("PatchStats", eigenvectors)  # duck-typed: importing patches here would load torch
        u = finite_float64(stats.eigenvectors, "eigenvectors")
        channels, kernel = int(stats.channels), int(stats.kernel_size)
    else:
        u = finite_float64(eigenvectors, "eigenvectors")
        channels = kernel = None
    if u.ndim != 2 or u.shape[0] != u.shape[1] or u.shape[0] == 0:
        raise LinearCNNInputError(f"eigenvectors have shape {u.shape}; expected a square (d, d) matrix")
    return u, channels, kernel


def energy_profile(
    weights: ArrayLike,
    eigenvectors: ArrayLike | PatchStats,
    *,
    initial: ArrayLike | None = None,
    normalize: bool = False,
) -> NDArray[np.float64]:
    """e_i = sqrt( (1/K) sum_k (w_k . u_i)^2 ) for each eigenvector u_i (PAPER Sec. 1), float64 (d,).

    weights: (K, C, k, k) filters or a (K, d) matrix (numpy or torch); eigenvectors: (d, d)
    with column i = u_i (or a PatchStats, whose patch shape then appears in error messages).
    initial: optional initial weights of the same shape, subtracted first (the authors' code
    does this by default; the paper's definition uses the raw weights). normalize: divide by
    the largest entry (the authors' code does this; correlations are unaffected).
    """
    w, w_shape, w_channels = _filter_matrix(weights)
    if initial is not None:
        w0, _, _ = _filter_matrix(initial)
        if w0.shape != w.shape:
            raise LinearCNNInputError(
                f"initial weights have shape {w0.shape} (flattened); expected {w.shape} like the weights"
            )
        w = w - w0  # (K, d)
    if w.shape[0] == 0:
        raise LinearCNNInputError("weights have no filters (K = 0); expected at least one")
    u, channels, kernel = _eigenvector_matrix(eigenvectors)
    d = u.shape[0]
    if w.shape[1] != d:
        stats_text = _describe_dim(d, channels, kernel) if channels else _describe_dim(d, w_channels, None)
        raise LinearCNNInputError(
            f"layer has {w_shape} but patch statistics have {stats_text}"
        )
    # The profile is homogeneous of degree 1 in the weights: measure w / scale and scale back, so
    # that weights near the ends of float64 (1e200 or 1e-200) neither overflow nor underflow.
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    projections = (w / scale if scale > 0 else w) @ u  # (K, d): w_k . u_i / scale
    profile = np.sqrt(np.mean(projections**2, axis=0))  # (d,)
    profile = profile * scale if scale > 0 else profile
    if not np.all(np.isfinite(profile)):  # only when the true profile exceeds float64 itself
        raise LinearCNNInputError("energy profile overflows float64 (weights near 1e308); expected weights of a trained layer")
    if normalize:
        peak = float(profile.max())
        if peak == 0.0:
            raise LinearCNNInputError("energy profile is all zero (zero filters); it cannot be normalised by its maximum")
        profile = profile / peak
    return profile


def pooled_energy_profile(
    banks: Sequence[ArrayLike],
    eigenvectors: ArrayLike | PatchStats,
    *,
    initial: Sequence[ArrayLike] | None = None,
) -> NDArray[np.float64]:
    """The energy profile of several filter banks taken as one bank (their filters together), (d,).

    e_i = sqrt( sum_s sum_k (w_sk . u_i)^2 / sum_s K_s ): the definition above applied to the
    union of the banks (e.g. the same network trained with several seeds). For banks of equal
    size K this is the root mean square of their profiles, sqrt(mean_s e_s,i^2).
    initial: one initial bank per bank, subtracted from it first.

    >>> import numpy as np
    >>> a, b = np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]])
    >>> pooled_energy_profile([a, b], np.eye(2)).round(4).tolist()  # sqrt(9/2), sqrt(16/2)
    [2.1213, 2.8284]
    """
    if len(banks) == 0:
        raise LinearCNNInputError("no filter banks given; expected at least one", parameter="banks")
    if initial is not None and len(initial) != len(banks):
        raise LinearCNNInputError(
            f"initial has {len(initial)} bank(s) but banks has {len(banks)}; expected one initial bank per bank",
            parameter="initial",
        )
    flat = []
    for i, bank in enumerate(banks):
        w, _, _ = _filter_matrix(bank)
        if initial is not None:
            w0, _, _ = _filter_matrix(initial[i])
            if w0.shape != w.shape:
                raise LinearCNNInputError(
                    f"initial bank {i} has shape {w0.shape} (flattened); expected {w.shape} like bank {i}", parameter="initial"
                )
            w = w - w0
        flat.append(w)  # (K_s, d)
    widths = {w.shape[1] for w in flat}
    if len(widths) > 1:
        raise LinearCNNInputError(
            f"banks have filters of {sorted(widths)} inputs; expected the same patch shape", parameter="banks"
        )
    return energy_profile(np.concatenate(flat, axis=0), eigenvectors)  # union bank (sum K_s, d)


def pearson(a: ArrayLike, b: ArrayLike, axis: int = -1, *, undefined: float = math.nan) -> NDArray[np.float64]:
    """Pearson correlation of `a` and `b` along `axis` (broadcasting), float64.

    The one correlation of the toolkit: `sum(a' b') / sqrt(sum(a'^2) sum(b'^2))` with
    `a' = a - mean(a)`. Where either side is constant along `axis` the correlation is undefined
    and the result is `undefined` (NaN by default; the fit's search passes 0 so that `argmax`
    over candidates is safe); values are clipped to [-1, 1] against rounding. No input checking
    (see `profile_similarity`).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    # Scale-free: divide each side by its largest magnitude so the squares stay inside float64
    # (profiles of weights near 1e200 or 1e-200 would overflow or underflow).
    x = x / np.where((peak := np.max(np.abs(x), axis=axis, keepdims=True)) > 0, peak, 1.0)
    y = y / np.where((peak := np.max(np.abs(y), axis=axis, keepdims=True)) > 0, peak, 1.0)
    numerator = np.sum(x * y, axis=axis)
    denominator = np.sqrt(np.sum(x * x, axis=axis) * np.sum(y * y, axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), undefined)
    return np.clip(r, -1.0, 1.0)


def _profile_vector(profile: ArrayLike, what: str) -> NDArray[np.float64]:
    p = finite_float64(profile, what)
    if p.ndim != 1 or p.size < 2:
        raise LinearCNNInputError(f"{what} has shape {p.shape}; expected a 1-D profile of at least 2 values")
    if np.all(p == p[0]):
        raise LinearCNNInputError(
            f"{what} is constant (all {p[0]:g}); its Pearson correlation is undefined"
        )
    return p


def profile_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson correlation of two energy profiles (PAPER Sec. 1 similarity), in [-1, 1].

    Invariant to rescaling either profile (so to rescaling the filters) and to adding a constant.
    Raises LinearCNNInputError for profiles of different lengths, non-finite or constant ones.
    """
    x = _profile_vector(a, "profile a")
    y = _profile_vector(b, "profile b")
    if x.shape != y.shape:
        raise LinearCNNInputError(f"profiles have {x.size} and {y.size} components; expected the same length")
    return float(pearson(x, y))


def similarity_matrix(profiles: Sequence[ArrayLike]) -> NDArray[np.float64]:
    """(n, n) Pearson correlations between n energy profiles (1 on the diagonal, symmetric)."""
    if len(profiles) == 0:
        raise LinearCNNInputError("no profiles given; expected at least one")
    vectors = [_profile_vector(p, f"profile {i}") for i, p in enumerate(profiles)]
    lengths = {v.size for v in vectors}
    if len(lengths) > 1:
        listing = ", ".join(str(v.size) for v in vectors)
        raise LinearCNNInputError(f"profiles have different lengths ({listing}); expected the same length")
    stacked = np.stack(vectors)  # (n, d)
    matrix = pearson(stacked[:, None, :], stacked[None, :, :])  # (n, n)
    matrix = 0.5 * (matrix + matrix.T)
    np.fill_diagonal(matrix, 1.0)
    return matrix


def whitening_indicators(weights: ArrayLike, stats: PatchStats) -> dict[str, float]:
    """How close a filter bank is to a whitening filter for the patch statistics (PAPER Thm 4.3).

    Returns (all floats):
      * "corr_inv_sqrt_eigenvalues": Pearson correlation of the energy profile with
        1/sqrt(eigenvalues) = 1/lambda_i, the profile of a whitening bank (W^T W ~ C^{-1});
        components with zero eigenvalue (rank-deficient statistics) are left out.
      * "corr_sqrt_eigenvalues": Pearson correlation with sqrt(eigenvalues) = lambda_i, the
        profile early in training (e_i ~ eta t lambda_i): the bank follows the data's spectrum.
      * "spectral_flatness": geometric mean / arithmetic mean of the eigenvalues of W C W^T
        (C = stats.second_moment = U diag(eigenvalues) U^T, the matrix the eigenvectors
        diagonalise; computed as squared singular values of W U diag(sqrt(eigenvalues))) restricted to its
        rank min(K, d): the covariance of the K filter outputs. 1 when the outputs are white
        (equal variances, e.g. W = C^{-1/2}); near 0 when a few directions dominate; 0 when
        W C W^T has fewer than min(K, d) nonzero eigenvalues (numerical rank as in
        `numpy.linalg.matrix_rank`, e.g. two identical filters).
    Raises LinearCNNInputError for mismatched shapes or a constant energy profile.
    """
    profile = energy_profile(weights, stats)
    eigenvalues = finite_float64(stats.eigenvalues, "eigenvalues")
    u = finite_float64(stats.eigenvectors, "eigenvectors")
    positive = eigenvalues > eigenvalues.max() * eigenvalues.size * np.finfo(np.float64).eps
    if positive.sum() < 2:
        raise LinearCNNInputError(
            f"patch statistics have {int(positive.sum())} positive eigenvalue(s); expected at least 2"
        )
    kept = profile[positive]
    if np.all(kept == kept[0]):
        raise LinearCNNInputError("energy profile is constant (e.g. all-zero filters); its correlations are undefined")
    std = np.sqrt(eigenvalues[positive])  # lambda_i
    corr_inverse = float(pearson(kept, 1.0 / std))
    corr_direct = float(pearson(kept, std))
    # Nonzero eigenvalues of W C W^T = squared singular values of W U diag(sqrt(eigenvalues)).
    w, _, _ = _filter_matrix(weights)
    peak = float(np.max(np.abs(w)))
    w = w / peak if peak > 0 else w  # flatness is scale-free; keep the squares inside float64
    scaled = (w @ u) * np.sqrt(eigenvalues)[None, :]  # (K, d)
    singular = np.linalg.svd(scaled, compute_uv=False)  # min(K, d), descending
    output_variances = singular**2
    # Numerical rank below min(K, d) (numpy's matrix_rank tolerance): a zero in the geometric mean.
    if singular[-1] <= singular[0] * max(scaled.shape) * np.finfo(np.float64).eps:
        flatness = 0.0
    else:
        geometric = math.exp(float(np.mean(np.log(output_variances))))
        flatness = float(min(1.0, geometric / float(np.mean(output_variances))))
    return {
        "corr_inv_sqrt_eigenvalues": corr_inverse,
        "corr_sqrt_eigenvalues": corr_direct,
        "spectral_flatness": flatness,
    }

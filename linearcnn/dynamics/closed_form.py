"""Closed-form full-batch gradient descent of the linear CNN in the eigenbasis of A (equations in
`linearcnn.dynamics`): the PSD eigen-decomposition of A, the stability bound and the filters at
any step count, for the scalar model and the multi-output model with a fixed readout."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from linearcnn._arrays import finite_float64
from linearcnn._linalg import NotPositiveSemidefiniteError, sorted_psd_eigh
from linearcnn.errors import LinearCNNInputError
from linearcnn.theory import growth_factor

#: Eigenvalues of A below -this x max|eigenvalue| are not rounding: A is not PSD.
NEGATIVE_TOLERANCE = 1e-10


def check_steps(steps: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
    """Step counts as a 1-D float64 array of non-negative integers (a scalar becomes one entry)."""
    t = finite_float64(steps, "steps").reshape(-1)
    if t.size == 0:
        raise LinearCNNInputError("steps is empty; expected one or more non-negative integers, e.g. 1,10,100", parameter="steps")
    if np.any(t < 0) or np.any(np.floor(t) != t):
        bad = t[(t < 0) | (np.floor(t) != t)][0]
        raise LinearCNNInputError(f"steps must be non-negative integers; found {bad:g}", parameter="steps")
    return t


def check_lr(lr: object) -> float:
    """`lr` as a float, checked to be a positive finite number."""
    try:
        value = float(lr)  # type: ignore[arg-type]  # anything float() takes; the rest is refused below
    except (TypeError, ValueError):
        raise LinearCNNInputError(f"lr must be a number, got {lr!r}", parameter="lr") from None
    if not (math.isfinite(value) and value > 0):
        raise LinearCNNInputError(f"lr must be a positive finite number, got {lr}", parameter="lr")
    return value


def _initial_filters(initial_weights: ArrayLike | torch.Tensor) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(the filters as given (K, C, k, k) or (K, d), the same flattened (K, d)), float64, checked."""
    w0 = finite_float64(initial_weights, "initial weights")
    if w0.ndim not in (2, 4) or w0.shape[0] < 1:
        raise LinearCNNInputError(f"initial weights have shape {w0.shape}; expected (K, C, k, k) or (K, d)")
    return w0, w0.reshape(w0.shape[0], -1)


@dataclass(frozen=True)
class Eigen:
    """Eigen-decomposition of a symmetric positive semidefinite matrix: M = U diag(values) U^T."""

    values: NDArray[np.float64]  # (d,) float64, descending, clipped at 0
    vectors: NDArray[np.float64]  # (d, d) float64, column i for values[i]


def psd_eigen(matrix: ArrayLike | torch.Tensor, name: str = "A") -> Eigen:
    """`linearcnn._linalg.sorted_psd_eigh` of a square matrix named `name`: eigenvalues descending,
    round-off negatives (above -1e-10 x max) become 0; a more negative one is LinearCNNInputError."""
    m = finite_float64(matrix, name)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise LinearCNNInputError(f"{name} has shape {m.shape}; expected a square (d, d) matrix")
    try:
        values, vectors = sorted_psd_eigh(m, negative_tolerance=NEGATIVE_TOLERANCE)
    except NotPositiveSemidefiniteError as exc:
        raise LinearCNNInputError(
            f"{name} has eigenvalue {exc.eigenvalue:g} < 0; expected a positive semidefinite matrix"
        ) from None
    return Eigen(values=values, vectors=vectors)


def growth_over_rate(x: NDArray[np.float64], steps: NDArray[np.float64]) -> NDArray[np.float64]:
    """h(x, t) = g(x, t) / x = sum_{s<t} (1 - x)^s, with h(0, t) = t. x (..., d), steps (S,) -> (S, ..., d).

    Uses the theory's stable `growth_factor` (expm1/log1p), so h keeps full relative precision
    as x -> 0; exactly zero rates take the limit t.
    """
    t = steps.reshape((-1,) + (1,) * x.ndim)  # (S, 1, ..., 1)
    positive = x > 0
    safe_x = np.where(positive, x, 1.0)
    ratio = np.asarray(growth_factor(safe_x, t)) / safe_x  # (S, ..., d)
    return np.where(positive, ratio, np.broadcast_to(t, ratio.shape))


def linear_cnn_max_stable_lr(a_max_eigenvalue: float, num_filters: int) -> float:
    """Supremum of stable learning rates of full-batch GD on `LinearCNN` (K filters, torch's MSE):
    K / max eigenvalue of A.

    The bound on the SGD step `lr` of the network, not on the step of the eigenvalue recursion:
    `linearcnn.theory.max_stable_lr(mu) = 2 / max(mu)` bounds eta = 2 lr / K, and
    eta * max(alpha) < 2 is lr < K / max(alpha). Infinite when A is zero.

    >>> linear_cnn_max_stable_lr(4.0, 8)
    2.0
    """
    return float(num_filters / a_max_eigenvalue) if a_max_eigenvalue > 0 else math.inf


def linear_cnn_multi_max_stable_lr(a_max_eigenvalue: float, readout_max_eigenvalue: float, num_outputs: int) -> float:
    """Supremum of stable learning rates of full-batch GD on `LinearCNNMulti` with a fixed readout R
    (m outputs, torch's MSE averaged over images and outputs): m / (max eig(R^T R) * max eig(A)).

    eta = 2 lr / m and every eigen-direction has rate x = eta rho_k alpha_i (`simulate_multi_filters`),
    stable iff max x < 2. Infinite when either matrix is zero.

    >>> linear_cnn_multi_max_stable_lr(4.0, 0.5, 10)
    5.0
    """
    product = a_max_eigenvalue * readout_max_eigenvalue
    return float(num_outputs / product) if product > 0 else math.inf


def simulate_filters(
    initial_weights: ArrayLike | torch.Tensor,
    A: ArrayLike | torch.Tensor,
    b: ArrayLike | torch.Tensor,
    lr: float,
    steps: ArrayLike | torch.Tensor,
    *,
    eigen: Eigen | None = None,
) -> NDArray[np.float64]:
    """Filters of `LinearCNN` after `steps` full-batch GD steps, in closed form (no data passes).

    Args:
        initial_weights: (K, C, k, k) or (K, d) filters at step 0.
        A: (d, d) second moment of the mean patches, b: (d,) patch-target moment (`moment_matrices`).
        lr: the SGD step size used on torch's MSE loss (mean over images).
        steps: step counts, any number (non-negative integers, any order).
        eigen: `psd_eigen(A)` when already computed (A is then not decomposed again).

    Returns:
        (S, K, C, k, k) float64 (or (S, K, d)): w_k(t) = w_k(0) + U [eta h(eta alpha, t) (beta - alpha c(0))],
        eta = 2 lr / K, h = g / x (module docstring).

    Raises LinearCNNInputError for shapes that do not match and for an unstable lr
    (eta * max alpha >= 2, i.e. lr >= K / max alpha).
    """
    w0, flat0 = _initial_filters(initial_weights)  # (K, ...), (K, d)
    num_filters, d = flat0.shape
    b_vec = finite_float64(b, "b")
    if b_vec.shape != (d,):
        raise LinearCNNInputError(f"b has shape {b_vec.shape}; expected ({d},) for filters of {d} weights")
    eig = psd_eigen(A) if eigen is None else eigen
    if eig.vectors.shape != (d, d):
        raise LinearCNNInputError(f"A has shape {eig.vectors.shape}; expected ({d}, {d}) for filters of {d} weights")
    rate = check_lr(lr)
    t = check_steps(steps)
    eta = 2.0 * rate / num_filters
    alpha, basis = eig.values, eig.vectors
    if eta * alpha[0] >= 2:
        raise LinearCNNInputError(
            f"lr={rate:g} makes gradient descent diverge: 2*lr/K * max eigenvalue of A = {eta * alpha[0]:.4g} >= 2 "
            f"(K={num_filters}, max eigenvalue {alpha[0]:.4g}); expected lr < {linear_cnn_max_stable_lr(alpha[0], num_filters):.6g}",
            parameter="lr",
        )
    c0 = basis.T @ flat0.mean(axis=0)  # (d,) mean filter in the eigenbasis
    beta = basis.T @ b_vec  # (d,)
    drive = beta - alpha * c0  # (d,) minus the gradient at step 0 / (2/K), in the eigenbasis
    delta_c = eta * growth_over_rate(eta * alpha, t) * drive  # (S, d)
    delta_w = delta_c @ basis.T  # (S, d) the change of every filter
    out = flat0[None, :, :] + delta_w[:, None, :]  # (S, K, d)
    return out.reshape((t.size,) + w0.shape)


def simulate_multi_filters(
    initial_weights: ArrayLike | torch.Tensor,
    readout: ArrayLike | torch.Tensor,
    A: ArrayLike | torch.Tensor,
    B: ArrayLike | torch.Tensor,
    lr: float,
    steps: ArrayLike | torch.Tensor,
) -> NDArray[np.float64]:
    """Filters of `LinearCNNMulti` with a fixed readout after `steps` full-batch GD steps.

    Model: out(x) = R W pbar(x), R (m, K) fixed, loss = mean over images and outputs of
    (out - y)^2, so dL/dW = (2/m) (R^T R W A - R^T B^T) with B = (1/N) sum_x pbar(x) y(x)^T (d, m)
    (`moment_matrices` with (N, m) targets, e.g. one-hot classes). With R^T R = V diag(rho) V^T,
    A = U diag(alpha) U^T and Z = V^T W U every entry follows the scalar recursion of
    `simulate_filters` with x_ki = eta rho_k alpha_i, eta = 2 lr / m.

    Returns (S, K, C, k, k) float64 (or (S, K, d)). Raises LinearCNNInputError for an unstable lr
    (eta max(rho) max(alpha) >= 2).
    """
    w0, flat0 = _initial_filters(initial_weights)  # (K, ...), (K, d)
    num_filters, d = flat0.shape
    r = finite_float64(readout, "readout")
    if r.ndim != 2 or r.shape[1] != num_filters:
        raise LinearCNNInputError(f"readout has shape {r.shape}; expected (m, {num_filters})")
    outputs = r.shape[0]
    b_mat = finite_float64(B, "B")
    if b_mat.shape != (d, outputs):
        raise LinearCNNInputError(f"B has shape {b_mat.shape}; expected ({d}, {outputs})")
    eig_a = psd_eigen(A)
    if eig_a.vectors.shape != (d, d):
        raise LinearCNNInputError(f"A has shape {eig_a.vectors.shape}; expected ({d}, {d})")
    eig_r = psd_eigen(r.T @ r, "R^T R")
    rate = check_lr(lr)
    t = check_steps(steps)
    eta = 2.0 * rate / outputs
    x = eta * np.outer(eig_r.values, eig_a.values)  # (K, d)
    if x.max(initial=0.0) >= 2:
        bound = linear_cnn_multi_max_stable_lr(eig_a.values[0], eig_r.values[0], outputs)
        raise LinearCNNInputError(
            f"lr={rate:g} makes gradient descent diverge: 2*lr/m * max eig(R^T R) * max eig(A) = {x.max():.4g} >= 2; "
            f"expected lr < {bound:.6g}",
            parameter="lr",
        )
    v, u = eig_r.vectors, eig_a.vectors
    z0 = v.T @ flat0 @ u  # (K, d)
    q = v.T @ r.T @ b_mat.T @ u  # (K, d)
    drive = q - np.outer(eig_r.values, eig_a.values) * z0  # (K, d)
    delta_z = eta * growth_over_rate(x, t) * drive  # (S, K, d)
    delta_w = np.einsum("ka,sab,db->skd", v, delta_z, u)  # (S, K, d) = V dZ U^T
    out = flat0[None] + delta_w
    return out.reshape((t.size,) + w0.shape)


__all__ = [
    "Eigen",
    "check_lr",
    "check_steps",
    "growth_over_rate",
    "linear_cnn_max_stable_lr",
    "linear_cnn_multi_max_stable_lr",
    "psd_eigen",
    "simulate_filters",
    "simulate_multi_filters",
]

"""The whole pipeline on arrays: one moment pass over (images, targets), then the filters of
`LinearCNN` at every requested step in closed form (`simulate`, `Simulation`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from linearcnn._arrays import finite_float64
from linearcnn.dynamics.closed_form import check_lr, check_steps, linear_cnn_max_stable_lr, psd_eigen, simulate_filters
from linearcnn.dynamics.moments import DEFAULT_BATCH_SIZE, moment_matrices, num_locations
from linearcnn.errors import LinearCNNInputError


@dataclass
class Simulation:
    """Exact full-batch GD of `LinearCNN` on one data set, at several step counts."""

    steps: NDArray[np.int64]  # (S,) int64
    filters: NDArray[np.float64]  # (S, K, C, k, k) float64
    initial_weights: NDArray[np.float64]  # (K, C, k, k) float64
    A: NDArray[np.float64]  # (d, d) float64
    b: NDArray[np.float64]  # (d,) float64
    a_eigenvalues: NDArray[np.float64]  # (d,) descending
    a_eigenvectors: NDArray[np.float64]  # (d, d) columns
    num_images: int
    num_locations: int  # J
    lr: float
    eta: float  # 2 lr / K: the step of the mean-filter recursion
    stride: int
    target_second_moment: float  # mean of y^2

    @property
    def max_stable_lr(self) -> float:
        """The largest stable `lr` for this data and filter count (`linear_cnn_max_stable_lr`)."""
        return linear_cnn_max_stable_lr(float(self.a_eigenvalues[0]), self.initial_weights.shape[0])

    def theory_tau(self) -> NDArray[np.float64]:
        """Gradient-flow time in units of the patch eigenvalues if A = C / J holds: eta * t / J. (S,)"""
        return self.eta * self.steps / self.num_locations


def simulate(
    images: ArrayLike | torch.Tensor,
    targets: ArrayLike | torch.Tensor,
    initial_weights: ArrayLike | torch.Tensor,
    lr: float,
    steps: ArrayLike | torch.Tensor,
    *,
    stride: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
) -> Simulation:
    """One moment pass over (images, targets), then the filters at every step count in closed form.

    images (N, C, H, W) normalised as for training, targets (N,), initial_weights (K, C, k, k).
    Checks lr and steps before the pass where it can (the stability bound needs A, so it is
    checked after the pass).
    """
    w0 = finite_float64(initial_weights, "initial weights")
    if w0.ndim != 4 or w0.shape[2] != w0.shape[3]:
        raise LinearCNNInputError(f"initial weights have shape {w0.shape}; expected (K, C, k, k)")
    check_lr(lr)
    t = check_steps(steps)
    target_shape = tuple(torch.as_tensor(targets).shape)
    shape = tuple(torch.as_tensor(images).shape)
    if len(target_shape) != 1:
        raise LinearCNNInputError(f"targets have shape {target_shape}; the scalar model needs (N,)")
    if len(shape) != 4 or shape[1] != w0.shape[1]:
        raise LinearCNNInputError(f"images have shape {shape}; expected (N, {w0.shape[1]}, H, W) to match the filters")
    kernel_size = int(w0.shape[2])
    J = num_locations(shape[2], shape[3], kernel_size, stride)
    A, b, n = moment_matrices(images, kernel_size, targets, stride=stride, batch_size=batch_size, device=device)
    eig = psd_eigen(A)
    filters = simulate_filters(w0, A, b, lr, t, eigen=eig)
    y = finite_float64(targets, "targets")
    return Simulation(
        steps=t.astype(np.int64), filters=filters, initial_weights=w0, A=A, b=b,
        a_eigenvalues=eig.values, a_eigenvectors=eig.vectors, num_images=n, num_locations=J,
        lr=float(lr), eta=2.0 * float(lr) / w0.shape[0], stride=int(stride),
        target_second_moment=float(np.mean(y**2)),
    )



__all__ = ["Simulation", "simulate"]

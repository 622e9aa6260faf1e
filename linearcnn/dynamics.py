"""Exact gradient-descent dynamics of the linear CNN in moment space, and how far data is from
the theory's assumptions (PAPER.md section 2).

    A, b, n = moment_matrices(images, kernel_size=3, targets=y)          # one pass over the data
    filters = simulate_filters(initial_weights, A, b, lr=0.01, steps=[0, 10, 100, 1000])  # (S, K, C, k, k)
    report = assumption_diagnostics(A, b, stats.eigenvalues, stats.eigenvectors,
                                    num_locations=30 * 30, num_images=n)

The model (`linearcnn.models.LinearCNN`): f(x) = (1/K) sum_k w_k . pbar(x), where pbar(x) is the
mean of image x's C x k x k patches (flattened in (C, k, k) order, like `conv.weight.reshape(K, -1)`).
With torch's MSE loss L = (1/N) sum_x (f(x) - y(x))^2 (mean over images, no factor 1/2) the
gradient with respect to every filter is the same,

    dL/dw_k = (2/K) (A wbar - b),   A = (1/N) sum_x pbar(x) pbar(x)^T,   b = (1/N) sum_x pbar(x) y(x),

so full-batch gradient descent with step `lr` moves the mean filter by

    wbar(t+1) = wbar(t) - eta (A wbar(t) - b),   eta = 2 lr / K,

and every filter by the same amount: w_k(t) = w_k(0) + wbar(t) - wbar(0). In the eigenbasis
A = U diag(alpha) U^T, with c = U^T wbar and beta = U^T b, each coordinate follows a scalar
recursion c_i(t+1) = (1 - x_i) c_i(t) + eta beta_i, x_i = eta alpha_i, whose solution is

    c_i(t) - c_i(0) = eta * [g(x_i, t) / x_i] * (beta_i - alpha_i c_i(0)),   g(x, t) = 1 - (1 - x)^t,

(PAPER.md section 3, first bullet) with g / x -> t as x -> 0. `g` is the theory module's stable
lambdified `growth_factor`. Gradient descent is stable iff x_i < 2 for all i, i.e.
lr < K / max(alpha). The multi-output model (`LinearCNNMulti`, fixed readout R) has the same
structure in the joint eigenbasis of R^T R and A (`simulate_multi_filters`).

Under the theory's assumptions (a) patches of one image uncorrelated and (b) labels uncorrelated
with the patches, A = C / J (C the patch second moment, J the number of locations) and
z_i = u_i . b is Gaussian with standard deviation sqrt(E[y^2] mu_i / (N J)). The diagnostics
measure both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from linearcnn._arrays import finite_float64
from linearcnn.energy import pearson
from linearcnn.errors import LinearCNNInputError
from linearcnn.device import resolve_device
from linearcnn.patches import mean_patches, patch_grid
from linearcnn.theory import growth_factor

DEFAULT_BATCH_SIZE = 1024
# Under assumption (b) z_i / sd(z_i) is standard normal, so |z_i| / sd(z_i) is folded normal:
FOLDED_NORMAL_MEAN = math.sqrt(2.0 / math.pi)  # 0.798
FOLDED_NORMAL_CV = math.sqrt(math.pi / 2.0 - 1.0)  # 0.756: std / mean of |N(0, 1)|


# --------------------------------------------------------------------------------------------
# moments


def num_locations(height: int, width: int, kernel_size: int, stride: int = 1) -> int:
    """J: the number of k x k patch locations of an H x W image at `stride` (no padding)."""
    out_h, out_w = patch_grid(height, width, kernel_size, stride)
    return out_h * out_w


def moment_matrices(
    images: Any,
    kernel_size: int,
    targets: Any,
    *,
    stride: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray, int]:
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
        raise LinearCNNInputError(f"targets have shape {tuple(targets_t.shape)}; expected ({n},) or ({n}, m) for {n} images")
    patch_grid(height, width, kernel_size, stride)
    if int(batch_size) < 1:
        raise LinearCNNInputError(f"batch size must be a positive integer, got {batch_size}")
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


# --------------------------------------------------------------------------------------------
# closed-form gradient descent


def check_steps(steps: Any) -> np.ndarray:
    """Step counts as a 1-D float64 array of non-negative integers (a scalar becomes one entry)."""
    t = finite_float64(steps, "steps").reshape(-1)
    if t.size == 0:
        raise LinearCNNInputError("steps is empty; expected one or more non-negative integers, e.g. 1,10,100")
    if np.any(t < 0) or np.any(np.floor(t) != t):
        bad = t[(t < 0) | (np.floor(t) != t)][0]
        raise LinearCNNInputError(f"steps must be non-negative integers; found {bad:g}")
    return t


def _check_lr(lr: Any) -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise LinearCNNInputError(f"lr must be a number, got {lr!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise LinearCNNInputError(f"lr must be a positive finite number, got {lr}")
    return value


@dataclass(frozen=True)
class Eigen:
    """Eigen-decomposition of a symmetric positive semidefinite matrix: M = U diag(values) U^T."""

    values: np.ndarray  # (d,) float64, descending, clipped at 0
    vectors: np.ndarray  # (d, d) float64, column i for values[i]


def psd_eigen(matrix: Any, name: str = "A") -> Eigen:
    """`eigh` in float64, sorted descending; round-off negatives (> -1e-10 max) become 0."""
    m = finite_float64(matrix, name)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise LinearCNNInputError(f"{name} has shape {m.shape}; expected a square (d, d) matrix")
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    values, vectors = values[::-1].copy(), vectors[:, ::-1].copy()
    scale = max(float(np.abs(values).max(initial=0.0)), np.finfo(np.float64).tiny)
    if values[-1] < -1e-10 * scale:
        raise LinearCNNInputError(f"{name} has eigenvalue {values[-1]:g} < 0; expected a positive semidefinite matrix")
    return Eigen(values=np.maximum(values, 0.0), vectors=vectors)


def growth_over_rate(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """h(x, t) = g(x, t) / x = sum_{s<t} (1 - x)^s, with h(0, t) = t. x (..., d), steps (S,) -> (S, ..., d).

    Uses the theory's stable `growth_factor` (expm1/log1p), so h keeps full relative precision
    as x -> 0; exactly zero rates take the limit t.
    """
    t = steps.reshape((-1,) + (1,) * x.ndim)  # (S, 1, ..., 1)
    positive = x > 0
    safe_x = np.where(positive, x, 1.0)
    ratio = growth_factor(safe_x, t) / safe_x  # (S, ..., d)
    return np.where(positive, ratio, np.broadcast_to(t, ratio.shape))


def linear_cnn_max_stable_lr(a_max_eigenvalue: float, num_filters: int) -> float:
    """Supremum of stable learning rates of full-batch GD on `LinearCNN` (K filters, torch's MSE):
    K / max eigenvalue of A.

    The bound on the SGD step `lr` of the network, not on the step of the eigenvalue recursion:
    `linearcnn.theory.max_stable_lr(mu) = 2 / max(mu)` bounds eta = 2 lr / K, and
    eta * max(alpha) < 2 is lr < K / max(alpha). Infinite when A is zero.
    """
    return float(num_filters / a_max_eigenvalue) if a_max_eigenvalue > 0 else math.inf


def simulate_filters(
    initial_weights: Any,
    A: Any,
    b: Any,
    lr: float,
    steps: Any,
    *,
    eigen: Eigen | None = None,
) -> np.ndarray:
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
    w0 = finite_float64(initial_weights, "initial weights")
    if w0.ndim not in (2, 4) or w0.shape[0] < 1:
        raise LinearCNNInputError(f"initial weights have shape {w0.shape}; expected (K, C, k, k) or (K, d)")
    num_filters = w0.shape[0]
    flat0 = w0.reshape(num_filters, -1)  # (K, d)
    d = flat0.shape[1]
    b_vec = finite_float64(b, "b")
    if b_vec.shape != (d,):
        raise LinearCNNInputError(f"b has shape {b_vec.shape}; expected ({d},) for filters of {d} weights")
    eig = psd_eigen(A) if eigen is None else eigen
    if eig.vectors.shape != (d, d):
        raise LinearCNNInputError(f"A has shape {eig.vectors.shape}; expected ({d}, {d}) for filters of {d} weights")
    rate = _check_lr(lr)
    t = check_steps(steps)
    eta = 2.0 * rate / num_filters
    alpha, basis = eig.values, eig.vectors
    if eta * alpha[0] >= 2:
        raise LinearCNNInputError(
            f"lr={rate:g} makes gradient descent diverge: 2*lr/K * max eigenvalue of A = {eta * alpha[0]:.4g} >= 2 "
            f"(K={num_filters}, max eigenvalue {alpha[0]:.4g}); expected lr < {linear_cnn_max_stable_lr(alpha[0], num_filters):.6g}"
        )
    c0 = basis.T @ flat0.mean(axis=0)  # (d,) mean filter in the eigenbasis
    beta = basis.T @ b_vec  # (d,)
    drive = beta - alpha * c0  # (d,) minus the gradient at step 0 / (2/K), in the eigenbasis
    delta_c = eta * growth_over_rate(eta * alpha, t) * drive  # (S, d)
    delta_w = delta_c @ basis.T  # (S, d) the change of every filter
    out = flat0[None, :, :] + delta_w[:, None, :]  # (S, K, d)
    return out.reshape((t.size,) + w0.shape)


def simulate_multi_filters(
    initial_weights: Any,
    readout: Any,
    A: Any,
    B: Any,
    lr: float,
    steps: Any,
) -> np.ndarray:
    """Filters of `LinearCNNMulti` with a fixed readout after `steps` full-batch GD steps.

    Model: out(x) = R W pbar(x), R (m, K) fixed, loss = mean over images and outputs of
    (out - y)^2, so dL/dW = (2/m) (R^T R W A - R^T B^T) with B = (1/N) sum_x pbar(x) y(x)^T (d, m)
    (`moment_matrices` with (N, m) targets, e.g. one-hot classes). With R^T R = V diag(rho) V^T,
    A = U diag(alpha) U^T and Z = V^T W U every entry follows the scalar recursion of
    `simulate_filters` with x_ki = eta rho_k alpha_i, eta = 2 lr / m.

    Returns (S, K, C, k, k) float64 (or (S, K, d)). Raises LinearCNNInputError for an unstable lr
    (eta max(rho) max(alpha) >= 2).
    """
    w0 = finite_float64(initial_weights, "initial weights")
    if w0.ndim not in (2, 4) or w0.shape[0] < 1:
        raise LinearCNNInputError(f"initial weights have shape {w0.shape}; expected (K, C, k, k) or (K, d)")
    num_filters = w0.shape[0]
    flat0 = w0.reshape(num_filters, -1)  # (K, d)
    d = flat0.shape[1]
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
    rate = _check_lr(lr)
    t = check_steps(steps)
    eta = 2.0 * rate / outputs
    x = eta * np.outer(eig_r.values, eig_a.values)  # (K, d)
    if x.max(initial=0.0) >= 2:
        bound = outputs / (eig_r.values[0] * eig_a.values[0])
        raise LinearCNNInputError(
            f"lr={rate:g} makes gradient descent diverge: 2*lr/m * max eig(R^T R) * max eig(A) = {x.max():.4g} >= 2; "
            f"expected lr < {bound:.6g}"
        )
    v, u = eig_r.vectors, eig_a.vectors
    z0 = v.T @ flat0 @ u  # (K, d)
    q = v.T @ r.T @ b_mat.T @ u  # (K, d)
    drive = q - np.outer(eig_r.values, eig_a.values) * z0  # (K, d)
    delta_z = eta * growth_over_rate(x, t) * drive  # (S, K, d)
    delta_w = np.einsum("ka,sab,db->skd", v, delta_z, u)  # (S, K, d) = V dZ U^T
    out = flat0[None] + delta_w
    return out.reshape((t.size,) + w0.shape)


# --------------------------------------------------------------------------------------------
# the whole pipeline on arrays


@dataclass
class Simulation:
    """Exact full-batch GD of `LinearCNN` on one data set, at several step counts."""

    steps: np.ndarray  # (S,) int64
    filters: np.ndarray  # (S, K, C, k, k) float64
    initial_weights: np.ndarray  # (K, C, k, k) float64
    A: np.ndarray  # (d, d) float64
    b: np.ndarray  # (d,) float64
    a_eigenvalues: np.ndarray  # (d,) descending
    a_eigenvectors: np.ndarray  # (d, d) columns
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

    def theory_tau(self) -> np.ndarray:
        """Gradient-flow time in units of the patch eigenvalues if A = C / J holds: eta * t / J. (S,)"""
        return self.eta * self.steps / self.num_locations


def simulate(
    images: Any,
    targets: Any,
    initial_weights: Any,
    lr: float,
    steps: Any,
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
    _check_lr(lr)
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


# --------------------------------------------------------------------------------------------
# assumption diagnostics


@dataclass
class AssumptionDiagnostics:
    """How far A and b are from what PAPER.md section 2's assumptions (a) and (b) predict.

    Components are those of the patch PCA (eigenvalues mu_i, eigenvectors u_i), descending; the
    summaries skip components with mu_i <= `floor` x max (degenerate statistics).

    (a) A = C / J: `offdiag_fraction` = ||offdiag(U^T A U)||_F / ||U^T A U||_F (0 when the patch
    PCA diagonalises A), to be read against `offdiag_noise_level`, the fraction that sampling noise
    alone gives when (a) holds and the mean patches are Gaussian (E ||offdiag||_F^2 =
    ((sum_i a_i)^2 - sum_i a_i^2) / N with a_i = (U^T A U)_ii), which falls as 1/sqrt(N). The
    Frobenius fraction is dominated by the largest components; `offdiag_correlation_rms`, the RMS
    over i != j of M_ij / sqrt(M_ii M_jj) (M = U^T A U), weighs every pair alike (sampling noise
    alone: about 1/sqrt(N)). `a_ratio` = (U^T A U)_ii / (mu_i / J) (all 1 under (a)), summarised by
    its geometric mean and the std of its log; `a_log_correlation` = corr(log (U^T A U)_ii, log mu_i);
    `a_eigenvalue_ratio` = sorted eig(A) / (sorted mu / J).

    (b) z_i = u_i . b ~ N(0, E[y^2] mu_i / (N J)): `z_log_correlation` = corr(log|z_i|, log sqrt(mu_i))
    (the paper's |z_i| proportional to lambda_i); `z_ratio` = |z_i| / sqrt(E[y^2] mu_i / (N J)),
    folded normal under (a)+(b): mean 0.798, std/mean 0.756. `z_label_ratio` normalises by the
    exact spread for labels independent of these images, sqrt(E[y^2] (U^T A U)_ii / N): it tests
    (b) alone.
    """

    num_images: int
    num_locations: int
    components_used: int
    offdiag_fraction: float
    offdiag_noise_level: float
    offdiag_correlation_rms: float
    a_ratio_geomean: float
    a_ratio_log_std: float
    a_log_correlation: float
    z_log_correlation: float
    z_ratio_mean: float
    z_ratio_cv: float
    z_label_ratio_mean: float
    z_label_ratio_cv: float
    patch_eigenvalues: np.ndarray  # (d,) mu_i
    a_diagonal: np.ndarray  # (d,) (U^T A U)_ii
    a_ratio: np.ndarray  # (d,)
    a_eigenvalue_ratio: np.ndarray  # (d,)
    z: np.ndarray  # (d,) u_i . b
    z_ratio: np.ndarray  # (d,)
    z_label_ratio: np.ndarray  # (d,)
    folded_normal_mean: float = FOLDED_NORMAL_MEAN
    folded_normal_cv: float = FOLDED_NORMAL_CV

    def summary(self) -> dict[str, float | int]:
        """The scalar fields only."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become lists, with None where a value is not finite (e.g. mu_i = 0)."""

        def clean(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return [clean(float(v)) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return {k: clean(v) for k, v in asdict(self).items()}


def _cv(values: np.ndarray) -> float:
    mean = float(values.mean())
    return float(values.std() / mean) if mean > 0 else float("nan")


def assumption_diagnostics(
    A: Any,
    b: Any,
    patch_eigenvalues: Any,
    patch_eigenvectors: Any,
    *,
    num_locations: int,
    num_images: int,
    target_second_moment: float = 1.0,
    floor: float = 1e-10,
) -> AssumptionDiagnostics:
    """Measure assumptions (a) and (b) of PAPER.md section 2 (see `AssumptionDiagnostics`).

    Args:
        A, b: the moments (`moment_matrices`, scalar targets).
        patch_eigenvalues (d,), patch_eigenvectors (d, d): the patch PCA of the same images at
            the same stride (`linearcnn.patches.patch_stats(...).eigenvalues / .eigenvectors`).
        num_locations: J, patch locations per image; num_images: N.
        target_second_moment: mean of y^2 (1 for +-1 targets).
    """
    a_mat = finite_float64(A, "A")
    b_vec = finite_float64(b, "b")
    mu = finite_float64(patch_eigenvalues, "patch eigenvalues")
    basis = finite_float64(patch_eigenvectors, "patch eigenvectors")
    d = mu.size
    if a_mat.shape != (d, d) or b_vec.shape != (d,) or basis.shape != (d, d):
        raise LinearCNNInputError(
            f"A {a_mat.shape}, b {b_vec.shape}, patch eigenvectors {basis.shape} do not match {d} patch eigenvalues"
        )
    if num_locations < 1 or num_images < 1:
        raise LinearCNNInputError(f"num_locations and num_images must be >= 1, got {num_locations}, {num_images}")
    rotated = basis.T @ a_mat @ basis  # (d, d) A in the patch-PCA basis
    diagonal = np.diag(rotated).copy()  # (d,)
    total = float(np.linalg.norm(rotated))
    offdiag = float(np.sqrt(max(total**2 - float(diagonal @ diagonal), 0.0)))
    offdiag_fraction = offdiag / total if total > 0 else float("nan")
    scale = np.sqrt(np.maximum(diagonal, np.finfo(np.float64).tiny))  # (d,)
    correlation = rotated / np.outer(scale, scale)  # (d, d)
    off_mask = ~np.eye(d, dtype=bool) & np.outer(diagonal > 0, diagonal > 0)
    offdiag_correlation_rms = float(np.sqrt(np.mean(correlation[off_mask] ** 2))) if off_mask.any() else float("nan")
    noise = math.sqrt(max(float(diagonal.sum()) ** 2 - float(diagonal @ diagonal), 0.0) / num_images)
    offdiag_noise_level = noise / total if total > 0 else float("nan")
    a_eigen = psd_eigen(a_mat).values  # (d,) descending
    mu_sorted = np.sort(mu)[::-1]
    used = mu > floor * mu.max(initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_a = mu / num_locations  # (d,) A_ii under (a)
        a_ratio = diagonal / expected_a
        a_eig_ratio = a_eigen / (mu_sorted / num_locations)
        z = basis.T @ b_vec  # (d,)
        z_sd = np.sqrt(target_second_moment * mu / (num_images * num_locations))  # (d,) under (a)+(b)
        z_ratio = np.abs(z) / z_sd
        z_label_sd = np.sqrt(target_second_moment * np.maximum(diagonal, 0.0) / num_images)  # (d,) under (b)
        z_label_ratio = np.abs(z) / z_label_sd
        log_a_ratio = np.log(a_ratio[used & (diagonal > 0)])
        z_used = used & (np.abs(z) > 0)
    return AssumptionDiagnostics(
        num_images=int(num_images),
        num_locations=int(num_locations),
        components_used=int(used.sum()),
        offdiag_fraction=offdiag_fraction,
        offdiag_noise_level=offdiag_noise_level,
        offdiag_correlation_rms=offdiag_correlation_rms,
        a_ratio_geomean=float(np.exp(log_a_ratio.mean())) if log_a_ratio.size else float("nan"),
        a_ratio_log_std=float(log_a_ratio.std()) if log_a_ratio.size else float("nan"),
        a_log_correlation=float(pearson(np.log(np.maximum(diagonal[used], np.finfo(float).tiny)), np.log(mu[used]))),
        z_log_correlation=float(pearson(np.log(np.abs(z[z_used])), 0.5 * np.log(mu[z_used]))),
        z_ratio_mean=float(z_ratio[used].mean()),
        z_ratio_cv=_cv(z_ratio[used]),
        z_label_ratio_mean=float(z_label_ratio[used & (diagonal > 0)].mean()),
        z_label_ratio_cv=_cv(z_label_ratio[used & (diagonal > 0)]),
        patch_eigenvalues=mu,
        a_diagonal=diagonal,
        a_ratio=a_ratio,
        a_eigenvalue_ratio=a_eig_ratio,
        z=z,
        z_ratio=z_ratio,
        z_label_ratio=z_label_ratio,
    )

"""How far a data set is from the theory's assumptions (PAPER.md section 2): (a) patches of one
image uncorrelated, so A = C / J, and (b) labels uncorrelated with the patches, so z_i = u_i . b
is Gaussian with standard deviation sqrt(E[y^2] mu_i / (N J)) (`assumption_diagnostics`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from linearcnn._arrays import finite_float64
from linearcnn.dynamics.closed_form import psd_eigen
from linearcnn.energy import pearson
from linearcnn.errors import LinearCNNInputError
from linearcnn.records import jsonable

# Under assumption (b) z_i / sd(z_i) is standard normal, so |z_i| / sd(z_i) is folded normal:
FOLDED_NORMAL_MEAN = math.sqrt(2.0 / math.pi)  # 0.798
FOLDED_NORMAL_CV = math.sqrt(math.pi / 2.0 - 1.0)  # 0.756: std / mean of |N(0, 1)|


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
    patch_eigenvalues: NDArray[np.float64]  # (d,) mu_i
    a_diagonal: NDArray[np.float64]  # (d,) (U^T A U)_ii
    a_ratio: NDArray[np.float64]  # (d,)
    a_eigenvalue_ratio: NDArray[np.float64]  # (d,)
    z: NDArray[np.float64]  # (d,) u_i . b
    z_ratio: NDArray[np.float64]  # (d,)
    z_label_ratio: NDArray[np.float64]  # (d,)
    folded_normal_mean: float = FOLDED_NORMAL_MEAN
    folded_normal_cv: float = FOLDED_NORMAL_CV

    def summary(self) -> dict[str, float | int]:
        """The scalar fields only."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become lists, with None where a value is not finite (e.g. mu_i = 0)."""
        return {k: jsonable(v) for k, v in asdict(self).items()}


def _cv(values: NDArray[np.float64]) -> float:
    mean = float(values.mean())
    return float(values.std() / mean) if mean > 0 else float("nan")


def assumption_diagnostics(
    A: ArrayLike | torch.Tensor,
    b: ArrayLike | torch.Tensor,
    patch_eigenvalues: ArrayLike | torch.Tensor,
    patch_eigenvectors: ArrayLike | torch.Tensor,
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


__all__ = ["FOLDED_NORMAL_CV", "FOLDED_NORMAL_MEAN", "AssumptionDiagnostics", "assumption_diagnostics"]

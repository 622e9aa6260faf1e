"""Whether a learning rate is stable for the linear models: the largest eigenvalue of the GD Hessian.

The mean-patch second moment A = (1/N) sum_x pbar(x) pbar(x)^T has its one home in
`linearcnn.dynamics.moment_matrices`; here it is combined with the model's output structure
(PAPER.md section 2). `LinearCNN`: f = (1/K) sum_k w_k . pbar, L = mean (f - y)^2, so
H = (2/K^2) (1 1^T) kron A and lambda_max(H) = 2 lambda_max(A) / K. `LinearCNNMulti` (fixed
readout R, classes x K): L = mean over images and classes, H = (2/C) (R^T R) kron A, so
lambda_max(H) = (2/C) lambda_max(R^T R) lambda_max(A). Full-batch gradient descent with step lr is
stable iff lr * lambda_max(H) < 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from linearcnn.dynamics import linear_cnn_max_stable_lr, linear_cnn_multi_max_stable_lr, moment_matrices, psd_eigen
from linearcnn.errors import LinearCNNInputError
from linearcnn.models import LINEAR_ARCHS, LinearCNN, LinearCNNMulti, first_layer, unwrap_model
from linearcnn.train.config import TrainConfig


def linear_max_stable_lr(model: nn.Module, images: torch.Tensor) -> float:
    """Supremum of stable full-batch GD learning rates for a linear model (module docstring).

    images: (N, C, H, W) normalised as for training. The bounds themselves live in
    `linearcnn.dynamics` (`linear_cnn_max_stable_lr`, `linear_cnn_multi_max_stable_lr`); here the
    model supplies K or its readout R. Raises LinearCNNInputError for other models.
    """
    model = unwrap_model(model)
    conv = first_layer(model)
    kernel_size = int(conv.kernel_size[0])
    no_targets = torch.zeros(images.shape[0], dtype=torch.float64)  # (N,) A does not depend on y
    second_moment, _, _ = moment_matrices(images, kernel_size, no_targets, device=images.device)  # A (d, d) float64
    lambda_a = float(psd_eigen(second_moment).values[0])
    if isinstance(model, LinearCNN):
        return linear_cnn_max_stable_lr(lambda_a, conv.out_channels)
    if isinstance(model, LinearCNNMulti):
        readout = model.readout.weight.detach().to(torch.float64).cpu()  # (C, K)
        lambda_r = float(torch.linalg.eigvalsh(readout.T @ readout)[-1])
        return linear_cnn_multi_max_stable_lr(lambda_a, lambda_r, readout.shape[0])
    raise LinearCNNInputError(f"the stability bound is defined for the linear models only, not {type(model).__name__}")


def linear_gd_hessian_max_eigenvalue(model: nn.Module, images: torch.Tensor) -> float:
    """Largest eigenvalue of the Hessian of the MSE loss in the filters, for the linear models:
    2 / `linear_max_stable_lr` (GD is stable iff lr * lambda_max(H) < 2)."""
    return 2.0 / linear_max_stable_lr(model, images)


def check_linear_lr(config: TrainConfig, model: nn.Module, images: torch.Tensor) -> float | None:
    """Raise LinearCNNInputError if `config.lr` makes full-batch GD on a linear model diverge.

    Applies to `linear`, and to `linear-multi` with MSE and a fixed readout (otherwise the loss is
    not quadratic in the filters and None is returned). The bound lr * lambda_max(H) < 2 is that of
    full-batch gradient descent; mini-batch SGD is checked against the same bound. Returns the
    largest stable lr.
    """
    if config.arch not in LINEAR_ARCHS or (config.arch == "linear-multi" and (config.readout != "fixed" or config.loss != "mse")):
        return None
    lr_bound = linear_max_stable_lr(model, images)
    if not math.isfinite(lr_bound):  # A or the readout is zero: every lr is stable
        return None
    hessian_max = 2.0 / lr_bound
    if config.lr >= lr_bound:
        raise LinearCNNInputError(
            f"lr {config.lr:g} is unstable for arch {config.arch}: lr * lambda_max(H) = {config.lr * hessian_max:.4g} >= 2, "
            f"where lambda_max(H) = {hessian_max:.4g} is the largest eigenvalue of the full-batch GD Hessian "
            f"(from the mean-patch second moment of the normalised data); use lr < {lr_bound:.4g}",
            parameter="lr",
        )
    return lr_bound


__all__ = ["check_linear_lr", "linear_gd_hessian_max_eigenvalue", "linear_max_stable_lr"]

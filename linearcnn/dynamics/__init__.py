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

Where it lives: `moments` (A, b and J from one pass over the data), `closed_form` (the PSD
eigen-decomposition of A, the stability bound and the filters at any step), `simulation` (both
on one data set: `simulate`, `Simulation`), `diagnostics` (assumptions (a) and (b)).
"""

from linearcnn.dynamics.closed_form import (
    Eigen,
    check_steps,
    growth_over_rate,
    linear_cnn_max_stable_lr,
    linear_cnn_multi_max_stable_lr,
    psd_eigen,
    simulate_filters,
    simulate_multi_filters,
)
from linearcnn.dynamics.diagnostics import (
    FOLDED_NORMAL_CV,
    FOLDED_NORMAL_MEAN,
    AssumptionDiagnostics,
    assumption_diagnostics,
)
from linearcnn.dynamics.moments import DEFAULT_BATCH_SIZE, moment_matrices, num_locations
from linearcnn.dynamics.simulation import Simulation, simulate

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FOLDED_NORMAL_CV",
    "FOLDED_NORMAL_MEAN",
    "AssumptionDiagnostics",
    "Eigen",
    "Simulation",
    "assumption_diagnostics",
    "check_steps",
    "growth_over_rate",
    "linear_cnn_max_stable_lr",
    "linear_cnn_multi_max_stable_lr",
    "moment_matrices",
    "num_locations",
    "psd_eigen",
    "simulate",
    "simulate_filters",
    "simulate_multi_filters",
]

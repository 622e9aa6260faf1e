"""fit_formula: recovers known parameters, and never does worse than the reference grid search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linearcnn.errors import LinearCNNInputError
from linearcnn.fit import fit_formula
from linearcnn.simulation_report import simulation_report, theory_profile
from linearcnn.theory import gradient_flow_profile, raw_gradient_flow_profile


def eigenvalues_strategy(min_size=5, max_size=75):
    # Distinct eigenvalues at least 0.01 decades apart (a profile over two distinct values
    # correlates perfectly with any two-level curve, so tau would not be identifiable).
    return st.lists(st.integers(-500, 100), min_size=min_size, max_size=max_size, unique=True).map(
        lambda logs: np.sort(10.0 ** (np.asarray(logs) / 100))[::-1].copy()
    )


def reference_grid_search(profile, eigenvalues, num_images=10_000, patches_per_image=900):
    """The reference method's grid (steps 10,000..5,000,000 by 250, eta 1e-7, x = eta s^2 / 2N),
    written independently with the textbook formula, vectorised."""
    singular = np.sqrt(eigenvalues * num_images * patches_per_image)
    x = (1 / (2 * num_images)) * 1e-7 * singular**2
    steps = np.arange(10_000, 5_000_000, 250, dtype=np.float64)[:, None]
    sol = np.abs((1 - np.power(1 - x, steps)) / x * singular)
    sol = sol / sol.max(axis=1, keepdims=True)
    z_sol = (sol - sol.mean(axis=1, keepdims=True)) / sol.std(axis=1, keepdims=True)
    z_prof = (profile - profile.mean()) / profile.std()
    return max(0.0, float(np.max(z_sol @ z_prof / profile.size))), 1e-7 * singular**2 / (2 * num_images) / eigenvalues


def pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1])


@given(mu=eigenvalues_strategy(), log_tau=st.floats(-2.0, 5.0))
def test_recovers_tau_of_an_exact_profile(mu, log_tau):
    tau = 10.0**log_tau
    profile = gradient_flow_profile(mu, tau)
    fit = fit_formula(profile * 3.7, mu)  # any scale
    assert fit.correlation > 1 - 1e-9
    assert pearson(fit.fitted_profile, profile) > 1 - 1e-9
    # tau is identifiable when some component is mid-way (0.1 < tau mu < 10): there the profile's
    # shape changes with tau; far outside, it is sqrt(mu) or 1/sqrt(mu) whatever tau is.
    if np.any((tau * mu > 0.1) & (tau * mu < 10)):
        assert fit.tau == pytest.approx(tau, rel=2e-3)


@pytest.mark.parametrize("seed", range(6))
def test_never_lower_than_reference_grid_search(seed):
    rng = np.random.default_rng(seed)
    mu = np.sort(10 ** rng.uniform(-4, 0, 27))[::-1]
    tau = 10 ** rng.uniform(0, 4)
    profile = gradient_flow_profile(mu, tau) * np.abs(1 + 0.3 * rng.normal(size=mu.size))
    reference, x_over_mu = reference_grid_search(profile, mu)
    # The reference searches the discrete family with lr = x / mu; fit the same family.
    fit = fit_formula(profile, mu, lr=float(x_over_mu[0]))
    assert fit.correlation >= reference - 1e-12
    assert fit_formula(profile, mu).correlation >= reference - 1e-6  # gradient flow: the lr -> 0 limit
    assert fit.correlation == pytest.approx(pearson(fit.fitted_profile, profile), abs=1e-12)


@given(mu=eigenvalues_strategy(max_size=30), log_tau=st.floats(-1.0, 3.0), ratio=st.floats(0.05, 2.0))
def test_raw_fit_recovers_tau_and_init_ratio(mu, log_tau, ratio):
    tau = 10.0**log_tau
    base = gradient_flow_profile(mu, tau)
    profile = raw_gradient_flow_profile(mu, tau, ratio * base.max())
    fit = fit_formula(profile, mu, raw=True)
    assert fit.correlation > 1 - 1e-6
    plain = fit_formula(profile, mu)
    assert fit.correlation >= plain.correlation - 1e-9  # two parameters never fit worse than one


def test_steps_family_agrees_with_gradient_flow_for_small_lr():
    mu = np.logspace(0, -3, 27)
    profile = gradient_flow_profile(mu, 50.0)
    fit = fit_formula(profile, mu, lr=1e-4)
    assert fit.steps * fit.lr == pytest.approx(fit.tau)
    assert fit.tau == pytest.approx(50.0, rel=1e-2)
    assert fit.correlation > 1 - 1e-6


@pytest.mark.parametrize(
    "profile, eigenvalues, words",
    [
        ([1.0, 2.0, 3.0], [1.0, 0.5], "shape"),
        ([1.0, 1.0, 1.0], [1.0, 0.5, 0.1], "constant"),
        ([1.0, np.nan, 3.0], [1.0, 0.5, 0.1], "finite"),
        ([1.0, 2.0], [1.0, 0.5], "at least 3"),
        ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], "degenerate"),
    ],
)
def test_bad_input(profile, eigenvalues, words):
    with pytest.raises(LinearCNNInputError, match=words):
        fit_formula(profile, eigenvalues)


def test_degenerate_eigenvalues_warn_and_stay_finite():
    mu = np.array([1.0, 0.5, 0.1, 0.0, 0.0])
    with pytest.warns(UserWarning, match="floored"):
        fit = fit_formula([1.0, 2.0, 3.0, 4.0, 4.5], mu)
    assert np.all(np.isfinite(fit.fitted_profile)) and np.isfinite(fit.correlation)


@pytest.mark.parametrize("lr", [1.5, -1.0])
def test_bad_lr_names_the_parameter(lr):
    with pytest.raises(LinearCNNInputError, match="lr") as caught:
        fit_formula([1.0, 2.0, 3.0], [1.0, 0.5, 0.1], lr=lr)
    assert caught.value.parameter == "lr"
    assert caught.value.for_option("--lr").startswith("--lr")


# --------------------------------------------------------------------------------------------
# the exact dynamics, measured (linearcnn.simulation_report)


def test_theory_profile_is_the_discrete_formula_while_stable_and_gradient_flow_beyond():
    mu = np.array([2.0, 0.5, 0.125])
    lr, t = 0.3, 7
    np.testing.assert_allclose(theory_profile(mu, lr_patch=lr, step=t), (1 - (1 - lr * mu) ** t) / np.sqrt(mu), rtol=1e-12)
    np.testing.assert_array_equal(theory_profile(mu, lr_patch=lr, step=0), np.zeros(3))  # t = 0: nothing learned
    lr = 1.0  # lr * max(mu) = 2: the recursion would not converge; the theory's time is still tau = lr t
    np.testing.assert_allclose(theory_profile(mu, lr_patch=lr, step=t), -np.expm1(-lr * t * mu) / np.sqrt(mu), rtol=1e-12)


def test_simulation_report_measures_every_step_with_the_simulations_own_tau():
    from linearcnn.dynamics import simulate
    from linearcnn.energy import energy_profile
    from linearcnn.patches import patch_stats

    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 1, 6, 6)).cumsum(axis=3)  # (N, C, H, W)
    targets = rng.choice([-1.0, 1.0], size=12)
    initial = 1e-3 * rng.normal(size=(4, 1, 3, 3))
    sim = simulate(images, targets, initial, lr=0.05, steps=[0, 5, 50], device="cpu")
    stats = patch_stats(images, 3, device="cpu")
    reports = simulation_report(sim, stats)
    assert [r.step for r in reports] == [0, 5, 50]
    np.testing.assert_array_equal([r.theory_tau for r in reports], sim.theory_tau())
    first = reports[0]  # step 0: the filters have not moved, nothing to fit
    assert first.fit_correlation is None and first.theory_correlation is None and first.whitening is None
    np.testing.assert_array_equal(first.profile, np.zeros(9))
    for report, weights in zip(reports[1:], sim.filters[1:]):
        np.testing.assert_allclose(report.profile, energy_profile(weights - initial, stats.eigenvectors), rtol=1e-13)
        assert report.fit_correlation == pytest.approx(fit_formula(report.profile, stats.eigenvalues).correlation, abs=1e-12)
        assert report.raw_fit_correlation is not None and report.raw_profile is not None
    without_raw = simulation_report(sim, stats, raw=False)
    assert all(r.raw_profile is None and r.raw_fit_correlation is None for r in without_raw)
    assert [r.fit_correlation for r in without_raw] == [r.fit_correlation for r in reports]

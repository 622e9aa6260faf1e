"""fit_formula: recovers known parameters, and never does worse than the reference grid search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linearcnn.errors import LinearCNNInputError
from linearcnn.fit import check_intervals, fit_filters, fit_formula
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


# --------------------------------------------------------------------------------------------
# honest fits: an optimum at an end of the search range, or a flat fit, is flagged


MU = np.logspace(0, -4, 27)  # four decades of patch eigenvalues, like 3x3x3 image patches


def test_early_profile_with_tau_below_the_range_is_at_bound():
    # tau * max(mu) = 1e-9: the profile is tau sqrt(mu) to 1e-9 relative, whatever tau below 1e-4.
    profile = gradient_flow_profile(MU, 1e-9)
    assert pearson(profile, np.sqrt(MU)) > 1 - 1e-12  # independent: it is the early-training shape
    fit = fit_formula(profile, MU)
    low, high = fit.search_range["tau"]
    assert low == pytest.approx(1e-4 / MU.max()) and high == pytest.approx(1e4 / MU.min())
    assert fit.at_bound and not fit.degenerate
    assert fit.tau == pytest.approx(low, rel=1e-3)  # the optimum is the range's end, not 1e-9
    assert len(fit.warnings) == 1 and "lower end" in fit.warnings[0] and f"{fit.tau:.4g}" in fit.warnings[0]


@pytest.mark.parametrize("lr", [None, 1e-5])
def test_whitening_profile_needs_tau_above_the_range_and_is_at_bound(lr):
    # 1/sqrt(mu) written out (not from the theory module): the t -> inf limit, reached by no finite tau.
    fit = fit_formula(1 / np.sqrt(MU), MU, lr=lr)
    assert fit.correlation > 1 - 1e-12
    assert fit.at_bound and not fit.degenerate
    assert any("upper end" in w and f"{fit.tau:.4g}" in w for w in fit.warnings), fit.warnings


@pytest.mark.parametrize("log_tau", [-0.5, 0.7, 2.0, 3.3])
def test_mid_range_profile_is_an_honest_fit_and_recovers_tau(log_tau):
    tau = 10.0**log_tau  # some component has 0.1 < tau mu < 10: tau is identifiable
    rng = np.random.default_rng(int(10 * log_tau) % 7)
    profile = -np.expm1(-tau * MU) / np.sqrt(MU) * (1 + 1e-3 * rng.normal(size=MU.size))  # written out, 0.1% noise
    fit = fit_formula(profile, MU)
    assert not fit.at_bound and not fit.degenerate and fit.warnings == [], fit.warnings
    assert fit.tau == pytest.approx(tau, rel=2e-2)
    assert fit.caveat == ""


def test_raw_fit_of_a_nearly_flat_profile_is_degenerate():
    # A constant plus a 1e-3 ripple shaped like base^2 = the raw family's r -> inf limit (up to an
    # affine map, which Pearson ignores): the raw fit runs r to the end of its range.
    base = -np.expm1(-30.0 * MU) / np.sqrt(MU)
    profile = 1 + 1e-3 * (base / base.max()) ** 2
    fit = fit_formula(profile, MU, raw=True)
    assert fit.degenerate and fit.at_bound
    assert fit.init_ratio == pytest.approx(fit.search_range["init_ratio"][1])
    fitted_spread = fit.fitted_profile.max() / fit.fitted_profile.min() - 1  # independent: the fit is flat
    assert fitted_spread < 1e-4
    assert any("init ratio r" in w for w in fit.warnings)
    assert fit.caveat.startswith("not agreement")
    one_parameter = fit_formula(profile, MU)  # the one-parameter fit of the same profile cannot go flat
    assert not one_parameter.degenerate


def test_raw_profile_dominated_by_its_init_is_degenerate():
    # r = 1e4 x the profile scale: the measured raw profile is constant to ~5e-9.
    base = gradient_flow_profile(MU, 10.0)
    profile = raw_gradient_flow_profile(MU, 10.0, 1e4 * base.max())
    assert profile.max() / profile.min() - 1 < 1e-6
    fit = fit_formula(profile, MU, raw=True)
    assert fit.degenerate
    assert any("measured profile is constant" in w for w in fit.warnings), fit.warnings


def test_raw_fit_with_a_moderate_init_is_honest():
    base = gradient_flow_profile(MU, 10.0)
    fit = fit_formula(raw_gradient_flow_profile(MU, 10.0, 0.5 * base.max()), MU, raw=True)
    assert not fit.at_bound and not fit.degenerate and fit.warnings == []
    assert fit.init_ratio == pytest.approx(0.5, rel=1e-3) and fit.tau == pytest.approx(10.0, rel=1e-3)


def test_point_estimate_outside_its_bootstrap_interval_is_degenerate():
    fit = fit_formula(gradient_flow_profile(MU, 10.0), MU)
    fit.interval = {"tau": [9.0, 11.0]}
    check_intervals(fit)
    assert not fit.degenerate and fit.warnings == []
    fit.interval = {"tau": [20.0, 40.0]}
    check_intervals(fit)
    assert fit.degenerate and "outside its own bootstrap 95% interval [20, 40]" in fit.warnings[0]


def test_bootstrap_of_an_honest_filter_bank_keeps_it_honest():
    # Filters whose every component is drawn with sd = the formula at tau = 10: the bootstrap
    # profile scatters around the formula, and its interval holds the point estimate.
    rng = np.random.default_rng(1)
    u = np.linalg.qr(rng.normal(size=(MU.size, MU.size)))[0]  # (d, d) orthonormal eigenvectors
    coefficients = rng.normal(size=(400, MU.size)) * gradient_flow_profile(MU, 10.0)  # (K, d)
    fit = fit_filters(coefficients @ u.T, MU, u, bootstrap=40)
    assert fit.interval["tau"][0] <= fit.tau <= fit.interval["tau"][1]
    assert not fit.at_bound and not fit.degenerate, fit.warnings
    assert fit.tau == pytest.approx(10.0, rel=0.3)


def test_flags_survive_to_dict():
    fit = fit_formula(1 / np.sqrt(MU), MU)
    out = fit.to_dict()
    assert out["at_bound"] is True and out["degenerate"] is False
    assert out["warnings"] == fit.warnings and out["search_range"]["tau"] == fit.search_range["tau"]


def test_simulation_report_carries_each_fits_flags():
    from linearcnn.dynamics import simulate
    from linearcnn.patches import patch_stats

    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 1, 6, 6)).cumsum(axis=3)  # (N, C, H, W)
    targets = rng.choice([-1.0, 1.0], size=12)
    initial = 1e-3 * rng.normal(size=(4, 1, 3, 3))
    sim = simulate(images, targets, initial, lr=0.05, steps=[0, 1, 50], device="cpu")
    stats = patch_stats(images, 3, device="cpu")
    reports = simulation_report(sim, stats)
    assert not reports[0].at_bound and not reports[0].degenerate  # step 0: no fit, no flag
    for report in reports[1:]:
        sub = fit_formula(report.profile, stats.eigenvalues)
        raw = fit_formula(report.raw_profile, stats.eigenvalues, raw=True)
        assert (report.at_bound, report.degenerate) == (sub.at_bound, sub.degenerate)
        assert (report.raw_at_bound, report.raw_degenerate) == (raw.at_bound, raw.degenerate)
        assert report.warnings == [f"step {report.step}, init-subtracted fit: {w}" for w in sub.warnings] + [
            f"step {report.step}, raw fit: {w}" for w in raw.warnings
        ]
    # One step of lr 0.05 moves 1e-3 filters by far less than their init: the raw fit is flat.
    assert reports[1].raw_degenerate
    assert reports[1].to_dict()["raw_degenerate"] is True


def test_fit_matching_only_up_to_an_offset_is_degenerate():
    # The raw formula at r = 20 (a 0.1% ripple on a constant) minus most of that constant: Pearson
    # ignores the offset and finds r = 20 with correlation 1, but the formula, free only in scale,
    # predicts a profile ~450x flatter than the one measured (contrast 1.2e-3 against 0.56).
    base = gradient_flow_profile(MU, 10.0)
    formula = raw_gradient_flow_profile(MU, 10.0, 20.0 * base.max())
    profile = formula - 0.999 * formula.min()
    fit = fit_formula(profile, MU, raw=True)
    assert fit.correlation > 1 - 1e-9 and fit.init_ratio == pytest.approx(20.0, rel=1e-2)
    assert not fit.at_bound and fit.degenerate
    measured_contrast = np.ptp(profile) / profile.max()  # independent: 1 - min/max of each
    fitted_contrast = 1 - fit.fitted_profile.min() / fit.fitted_profile.max()
    assert fitted_contrast < 0.01 * measured_contrast
    assert any("free offset" in w for w in fit.warnings), fit.warnings
    honest = fit_formula(formula, MU, raw=True)  # the same formula without the offset: an honest fit
    assert not honest.degenerate and not honest.at_bound, honest.warnings

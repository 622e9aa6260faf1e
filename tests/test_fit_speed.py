"""The vectorised fit (issue #14): the same optimum as the scalar search it replaced and as a dense
brute-force grid, the batched formula entry point, the batched bootstrap, and numpy-only imports.

No timings here: `benchmarks/bench_fit.py` measures the speed.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, minimize_scalar

from linearcnn import _fit_search
from linearcnn.energy import energy_profile
from linearcnn.errors import LinearCNNInputError
from linearcnn.fit import _bootstrap_profiles, fit_filters, fit_formula
from linearcnn.theory import formula_profile, gradient_flow_profile, raw_formula_profile, raw_gradient_flow_profile
from linearcnn.theory.numeric import evaluate_rows

MU = np.logspace(0, -4, 27)


def spectra(min_size=3, max_size=40):
    # distinct eigenvalues at least 0.01 decades apart, as in test_fit
    return st.lists(st.integers(-500, 100), min_size=min_size, max_size=max_size, unique=True).map(
        lambda logs: np.sort(10.0 ** (np.asarray(logs) / 100))[::-1].copy()
    )


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def search_range(mu):
    return math.log(1e-4 / mu.max()), math.log(1e4 / mu.min())


def scalar_search(profile, mu, grid_points=384):
    """The search before #14, written again with the public formula: the grid, then one bounded
    Brent search (xatol 1e-7) one grid step either side of each of the 3 best local maxima."""
    lo, hi = search_range(mu)
    grid = np.linspace(lo, hi, grid_points)

    def score(log_tau):
        return corr(gradient_flow_profile(mu, math.exp(log_tau)), profile)

    scores = np.array([score(g) for g in grid])
    best_x, best_s = grid[np.argmax(scores)], scores.max()
    local = np.flatnonzero((scores >= np.roll(scores, 1)) & (scores >= np.roll(scores, -1))
                           | (np.arange(grid_points) == 0) | (np.arange(grid_points) == grid_points - 1))
    step = grid[1] - grid[0]
    for i in sorted(local, key=lambda k: -scores[k])[:3]:
        res = minimize_scalar(lambda lt: -score(lt), bounds=(max(lo, grid[i] - step), min(hi, grid[i] + step)),
                              method="bounded", options={"xatol": 1e-7})
        if -res.fun > best_s:
            best_x, best_s = res.x, -res.fun
    return best_x, best_s


def brute_force(profile, mu, points=200_001):
    """The best correlation over a dense grid of log tau (spacing ~1e-4), in chunks."""
    lo, hi = search_range(mu)
    grid = np.linspace(lo, hi, points)
    z = (profile - profile.mean()) / np.linalg.norm(profile - profile.mean())
    best = (-2.0, 0.0)
    for chunk in np.array_split(grid, 40):
        rows = -np.expm1(-np.exp(chunk)[:, None] * mu) / np.sqrt(mu)  # the formula, written out
        rows = rows - rows.mean(axis=1, keepdims=True)
        scores = rows @ z / np.linalg.norm(rows, axis=1)
        i = int(np.argmax(scores))
        best = max(best, (float(scores[i]), float(chunk[i])))
    return best


# --------------------------------------------------------------------------------------------
# the batched formula entry point


@given(mu=spectra(1, 30), log_taus=st.lists(st.floats(-5, 8), min_size=1, max_size=12),
       ratio=st.floats(0.0, 50.0), lr_fraction=st.floats(0.01, 1.0))
def test_evaluate_rows_equals_the_scalar_evaluation_row_by_row(mu, log_taus, ratio, lr_fraction):
    taus = 10.0 ** np.asarray(log_taus)
    lr = lr_fraction / mu.max()
    batched = {
        "flow": evaluate_rows("flow_profile", mu, [taus]),
        "steps": evaluate_rows("profile_stable", mu, [lr, taus / lr]),
        "raw_flow": evaluate_rows("raw_flow_profile", mu, [taus, np.full(taus.size, ratio)]),
        "raw_steps": evaluate_rows("raw_profile_stable", mu, [lr, taus / lr, np.full(taus.size, ratio)]),
    }
    for k, tau in enumerate(taus):
        np.testing.assert_array_equal(batched["flow"][k], gradient_flow_profile(mu, tau))
        np.testing.assert_array_equal(batched["steps"][k], formula_profile(mu, lr, tau / lr))
        np.testing.assert_array_equal(batched["raw_flow"][k], raw_gradient_flow_profile(mu, tau, ratio))
        np.testing.assert_array_equal(batched["raw_steps"][k], raw_formula_profile(mu, lr, tau / lr, ratio))
    assert all(rows.shape == (taus.size, mu.size) for rows in batched.values())


def test_numpy_evaluation_does_not_import_torch():
    code = ("import sys, numpy as np\n"
            "import linearcnn.theory.numeric as n\n"
            "p = n.gradient_flow_profile(np.array([1.0, 0.5, 0.1]), np.array([1.0, 10.0]))\n"
            "q = n.formula_profile(np.array([1.0, 0.5, 0.1]), 0.1, 5)\n"
            "from linearcnn.fit import fit_formula\n"
            "fit_formula(q * np.array([1.1, 0.9, 1.0]), np.array([1.0, 0.5, 0.1]))\n"
            "assert p.shape == (2, 3) and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
            "assert 'scipy.optimize' not in sys.modules and 'scipy.stats' not in sys.modules\n"
            "assert n.x_star() > 1 and 'sympy' not in sys.modules  # the generated functions (theory/_lambdified.py)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_torch_input_still_gives_torch():
    torch = pytest.importorskip("torch")
    mu = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)
    out = gradient_flow_profile(mu, torch.tensor([1.0, 10.0], dtype=torch.float64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy(), gradient_flow_profile(mu.numpy(), np.array([1.0, 10.0])), rtol=1e-14)


# --------------------------------------------------------------------------------------------
# the same optimum


@settings(max_examples=30, deadline=None)
@given(mu=spectra(), log_tau=st.floats(-1.0, 5.0), noise=st.sampled_from([0.0, 1e-3, 0.1, 0.4]), seed=st.integers(0, 2**16))
def test_vectorised_optimum_is_the_scalar_searchs(mu, log_tau, noise, seed):
    rng = np.random.default_rng(seed)
    profile = gradient_flow_profile(mu, 10.0**log_tau) * np.abs(1 + noise * rng.normal(size=mu.size))
    if np.ptp(profile) == 0:
        return
    fit = fit_formula(profile, mu)
    scalar_log_tau, scalar_score = scalar_search(profile, mu)
    assert fit.correlation >= scalar_score - 1e-9
    assert abs(fit.correlation - scalar_score) <= 1e-9
    # tau is pinned where the correlation falls off around the optimum: there both land on it
    lo, hi = search_range(mu)
    away = [corr(gradient_flow_profile(mu, math.exp(min(hi, max(lo, scalar_log_tau + s)))), profile) for s in (-1e-2, 1e-2)]
    if scalar_score - max(away) > 1e-7:
        assert math.log(fit.tau) == pytest.approx(scalar_log_tau, abs=1e-4)  # tau to 1e-4 relative


@settings(max_examples=12, deadline=None)
@given(mu=spectra(5, 40), log_tau=st.floats(-0.5, 4.0), seed=st.integers(0, 2**16))
def test_noisy_formula_target_recovers_tau_and_the_brute_force_optimum(mu, log_tau, seed):
    tau = 10.0**log_tau
    rng = np.random.default_rng(seed)
    profile = gradient_flow_profile(mu, tau) * (1 + 1e-3 * rng.normal(size=mu.size))
    fit = fit_formula(profile, mu)
    dense_score, dense_log_tau = brute_force(profile, mu)
    assert fit.correlation >= dense_score - 1e-12  # never below a dense grid of spacing ~1e-4
    assert fit.correlation - dense_score < 1e-7
    if np.any((tau * mu > 0.1) & (tau * mu < 10)) and mu.max() / mu.min() > 10:  # identifiable (see test_fit)
        assert fit.tau == pytest.approx(tau, rel=0.05)
        assert math.log(fit.tau) == pytest.approx(dense_log_tau, abs=2e-3)


@pytest.mark.parametrize("seed", range(4))
def test_raw_fit_is_never_below_the_scalar_nelder_mead(seed):
    rng = np.random.default_rng(seed)
    mu = np.sort(10 ** rng.uniform(-3, 0, 9))[::-1]
    tau, ratio = 10 ** rng.uniform(0, 3), 10 ** rng.uniform(-2, 0.5)
    profile = raw_gradient_flow_profile(mu, tau, ratio * gradient_flow_profile(mu, tau).max()) * np.abs(1 + 0.05 * rng.normal(size=9))
    fit = fit_formula(profile, mu, raw=True)
    lo, hi = search_range(mu)

    def negative(x):  # the pre-#14 raw objective: (log tau, log r) clipped to the search range
        t = math.exp(float(np.clip(x[0], lo, hi)))
        r = math.exp(float(np.clip(x[1], math.log(1e-4), math.log(1e2))))
        return -corr(raw_gradient_flow_profile(mu, t, r * gradient_flow_profile(mu, t).max()), profile)

    best = max(-minimize(negative, [math.log(tau) + d, math.log(ratio) + e], method="Nelder-Mead",
                         options={"xatol": 1e-9, "fatol": 1e-14, "maxiter": 2000}).fun for d, e in ((0.3, -0.3), (-0.3, 0.3)))
    assert fit.correlation >= best - 1e-9
    assert fit.correlation >= fit_formula(profile, mu).correlation - 1e-12  # r = 0 is in the family


# --------------------------------------------------------------------------------------------
# edge cases


def test_small_and_constant_profiles():
    with pytest.raises(LinearCNNInputError, match="at least 3"):
        fit_formula([1.0], [1.0])
    with pytest.raises(LinearCNNInputError, match="at least 3"):
        fit_formula([1.0, 2.0], [1.0, 0.5])
    with pytest.raises(LinearCNNInputError, match="constant"):
        fit_formula([2.0, 2.0, 2.0], [1.0, 0.5, 0.1])
    with pytest.raises(LinearCNNInputError, match="grid_points"):
        fit_formula([1.0, 2.0, 3.0], [1.0, 0.5, 0.1], grid_points=2)
    fit = fit_formula([1.0, 2.0, 3.5], [1.0, 0.5, 0.1])  # d = 3: the smallest fit
    assert np.isfinite(fit.tau) and fit.correlation == pytest.approx(corr(fit.fitted_profile, [1.0, 2.0, 3.5]), abs=1e-12)


@pytest.mark.parametrize("shape, end", [("early", 0), ("whitened", 1)])
def test_optimum_at_an_end_of_the_range_is_that_end(shape, end):
    profile = np.sqrt(MU) if shape == "early" else 1 / np.sqrt(MU)  # the family's two limits, written out
    fit = fit_formula(profile, MU)
    assert fit.at_bound and fit.correlation > 1 - 1e-9
    assert any(("lower" if end == 0 else "upper") + " end" in w for w in fit.warnings), fit.warnings
    if end == 0:  # below the range the family is sqrt(mu) exactly: the optimum is the range's end
        assert math.log(fit.tau) == pytest.approx(math.log(fit.search_range["tau"][0]), abs=1e-3)


def test_a_profile_with_two_local_maxima_finds_the_higher():
    # a mixture of an early and a late profile: the correlation over log tau has two humps
    early, late = gradient_flow_profile(MU, 3.0), gradient_flow_profile(MU, 3000.0)
    profile = early / early.max() + 0.8 * late / late.max()
    fit = fit_formula(profile, MU)
    assert fit.correlation >= brute_force(profile, MU)[0] - 1e-12


# --------------------------------------------------------------------------------------------
# the bootstrap, batched


def test_bootstrap_profiles_are_the_energy_profiles_of_the_resamples():
    rng = np.random.default_rng(0)
    w, u = rng.normal(size=(10, 27)), np.linalg.qr(rng.normal(size=(27, 27)))[0]
    profiles = _bootstrap_profiles(w, u, 6, seed=3)
    draws = np.random.default_rng(3)
    for row in profiles:
        np.testing.assert_allclose(row, energy_profile(w[draws.integers(0, 10, size=10)], u), rtol=1e-13)


@pytest.mark.parametrize("raw", [False, True])
def test_batched_bootstrap_equals_one_fit_per_resample(raw):
    rng = np.random.default_rng(2)
    u = np.linalg.qr(rng.normal(size=(MU.size, MU.size)))[0]
    w = (rng.normal(size=(40, MU.size)) * gradient_flow_profile(MU, 10.0)) @ u.T
    resamples = 12 if raw else 40
    fit = fit_filters(w, MU, u, raw=raw, bootstrap=resamples, seed=5)
    one_by_one = [fit_formula(p, MU, raw=raw, grid_points=128) for p in _bootstrap_profiles(w / np.abs(w).max(), u, resamples, 5)]
    for key, values in (("correlation", [f.correlation for f in one_by_one]), ("tau", [f.tau for f in one_by_one])):
        np.testing.assert_allclose(fit.interval[key], np.percentile(values, [2.5, 97.5]), rtol=1e-6)
    if raw:
        np.testing.assert_allclose(fit.interval["init_ratio"], np.percentile([f.init_ratio for f in one_by_one], [2.5, 97.5]),
                                   rtol=1e-4, atol=1e-6)
    assert fit.interval["samples"] == [resamples]


def test_batches_of_profiles_give_each_profiles_own_fit(monkeypatch):
    # a batch smaller than the number of profiles: the refinement runs in several batches
    monkeypatch.setattr(_fit_search, "_BATCH_ELEMENTS", 3 * 17 * MU.size * 2)
    rng = np.random.default_rng(4)
    profiles = gradient_flow_profile(MU, 10 ** rng.uniform(0, 3, size=7)) * np.abs(1 + 0.2 * rng.normal(size=(7, MU.size)))
    family = _fit_search.Family(MU, None, False)
    log_taus, ratios = _fit_search.optimum(family, profiles, 384)
    assert ratios is None
    for profile, log_tau in zip(profiles, log_taus):
        assert log_tau == pytest.approx(math.log(fit_formula(profile, MU).tau), abs=1e-6)


def test_spearman_is_scipys_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    profile = np.round(gradient_flow_profile(MU, 30.0) * np.abs(1 + 0.3 * rng.normal(size=MU.size)), 1)  # ties
    fit = fit_formula(profile, MU)
    fitted = gradient_flow_profile(MU, fit.tau)
    assert fit.spearman == pytest.approx(spearmanr(fitted, profile).statistic, abs=1e-12)

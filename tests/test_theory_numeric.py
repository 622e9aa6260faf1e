"""The lambdified formulas against independent computations, as hypothesis properties."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linearcnn.theory import (
    DivergentLearningRateError,
    FormulaInputError,
    formula_profile,
    gradient_flow_profile,
    raw_formula_profile,
    raw_gradient_flow_profile,
    whitening_profile,
    x_star,
)


def eigenvalue_arrays(min_size=2, max_size=30, low=-4.0, high=1.0):
    return st.lists(st.floats(low, high), min_size=min_size, max_size=max_size).map(
        lambda logs: np.sort(10.0 ** np.asarray(logs))[::-1].copy()
    )


def naive_profile(mu, lr, t):
    """The issue's independent float64 reference: sqrt(e) * (1 - (1 - lr*e)**t) / e."""
    return np.sqrt(mu) * (1 - (1 - lr * mu) ** t) / mu


def normalised(p):
    return p / np.max(p, axis=-1, keepdims=True)


@given(mu=eigenvalue_arrays(), lr_frac=st.floats(1e-3, 1.9), steps=st.integers(1, 10_000))
def test_formula_matches_independent_float64_evaluation(mu, lr_frac, steps):
    lr = lr_frac / mu.max()
    ours = normalised(formula_profile(mu, lr, steps))
    reference = normalised(naive_profile(mu, lr, steps))
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=0)


@given(mu=eigenvalue_arrays(max_size=8), lr_frac=st.floats(1e-3, 1.9), steps=st.integers(0, 300))
def test_numpy_torch_stable_naive_and_iterated_recurrence_agree(mu, lr_frac, steps):
    lr = lr_frac / mu.max()
    stable = formula_profile(mu, lr, steps)
    naive = formula_profile(mu, lr, steps, stable=False)
    torch_stable = formula_profile(torch.tensor(mu), lr, steps).numpy()
    # float64 iteration of c(t+1) = c - lr (mu c - z) with c(0) = 0 and z = sqrt(mu): c(t) = profile.
    c = np.zeros_like(mu)
    for _ in range(steps):
        c = c - lr * (mu * c - np.sqrt(mu))
    scale = np.max(np.abs(stable)) + 1e-300
    for other in (naive, torch_stable, c):
        np.testing.assert_allclose(other, stable, rtol=1e-9, atol=1e-12 * scale)


def mp_profile(mu, lr, t):
    mpmath.mp.dps = 60
    x = mpmath.mpf(lr) * mpmath.mpf(mu)  # the float64 inputs, exactly
    q = 1 - x
    growth = 1 - q ** int(t) if q < 0 else 1 - mpmath.power(q, mpmath.mpf(t))
    return float(growth / mpmath.sqrt(mpmath.mpf(mu)))


@pytest.mark.parametrize("x", [1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 0.1, 0.5, 0.999999, 1.0, 1.5, 1.999, 2 - 1e-9])
@pytest.mark.parametrize("t", [0, 1, 2, 7, 1000, 10**6, 10**9, 10**12, 10**15])
def test_stable_form_accurate_to_1e12_over_the_whole_range(x, t):
    mu = 0.25  # a power of two: lr * mu == x exactly, so the test measures the formula, not input rounding
    lr = x / mu
    ours = float(formula_profile(np.array([mu]), lr, t)[0])
    ours_torch = float(formula_profile(torch.tensor([mu], dtype=torch.float64), lr, t)[0])
    exact = mp_profile(mu, lr, t)
    assert math.isfinite(ours)
    if exact == 0.0:
        assert ours == 0.0 and ours_torch == 0.0
    else:
        assert abs(ours - exact) <= 1e-12 * abs(exact), (ours, exact)
        assert abs(ours_torch - exact) <= 1e-12 * abs(exact), (ours_torch, exact)


def test_naive_form_loses_precision_where_stable_does_not():
    # Documents why the stable form exists: 1 - (1 - 1e-15)**1 is off by ~10% in float64.
    mu = np.array([1.0])
    naive = formula_profile(mu, 1e-15, 1, stable=False)[0]
    stable = formula_profile(mu, 1e-15, 1)[0]
    assert abs(stable - 1e-15) / 1e-15 < 1e-12
    assert abs(naive - 1e-15) / 1e-15 > 1e-4


@given(mu=eigenvalue_arrays(), lr_frac=st.floats(1e-3, 1.9), steps=st.integers(1, 5000),
       scale=st.floats(1e-3, 1e3))
def test_scaling_eigenvalues_and_inverse_lr_leaves_normalised_profile_unchanged(mu, lr_frac, steps, scale):
    lr = lr_frac / mu.max()
    base = normalised(formula_profile(mu, lr, steps))
    scaled = normalised(formula_profile(mu * scale, lr / scale, steps))
    np.testing.assert_allclose(scaled, base, rtol=1e-9)


@given(mu=eigenvalue_arrays(), lr_frac=st.floats(1e-3, 0.999))
def test_each_component_is_monotone_in_steps_below_lr_mu_1(mu, lr_frac):
    lr = lr_frac / mu.max()
    steps = np.unique(np.round(np.logspace(0, 6, 200)))
    profiles = formula_profile(mu, lr, steps)  # (S, d) from one broadcast call
    assert profiles.shape == (steps.size, mu.size)
    assert np.all(np.diff(profiles, axis=0) >= -1e-15 * profiles[1:])


@given(log_tau=st.floats(-2, 4))
def test_gradient_flow_profile_peaks_at_x_star(log_tau):
    tau = 10.0**log_tau
    mu = np.logspace(-6, 6, 20001) / tau  # dense grid in x = tau mu around the peak
    profile = gradient_flow_profile(mu, tau)
    peak_x = mu[np.argmax(profile)] * tau
    spacing = 10 ** (12 / 20000)
    assert x_star() / spacing <= peak_x <= x_star() * spacing


@given(mu=eigenvalue_arrays(), log_tau=st.floats(-12, -8))
def test_early_regime_is_proportional_to_sqrt_eigenvalue(mu, log_tau):
    tau = 10.0**log_tau / mu.max()
    np.testing.assert_allclose(normalised(gradient_flow_profile(mu, tau)), normalised(np.sqrt(mu)), rtol=1e-7)


@given(mu=eigenvalue_arrays(), tau=st.floats(0.01, 100.0))
def test_discrete_profile_tends_to_gradient_flow_as_lr_goes_to_0(mu, tau):
    flow = gradient_flow_profile(mu, tau)
    errors = []
    for lr in [1e-2, 1e-3, 1e-4]:
        lr = min(lr, 0.5 / mu.max())
        steps = round(tau / lr)
        errors.append(np.max(np.abs(formula_profile(mu, lr, steps) - gradient_flow_profile(mu, steps * lr))))
    assert errors[-1] <= 1e-3 * np.max(flow) + 1e-12
    assert errors[-1] <= errors[0] + 1e-15


@given(mu=eigenvalue_arrays(), lr_frac=st.floats(0.01, 1.9))
def test_steps_to_infinity_gives_whitening(mu, lr_frac):
    lr = lr_frac / mu.max()
    x_min = lr * mu.min()
    steps = math.ceil(60 / min(x_min, 2 - lr * mu.max())) * 2  # even: (1 - x)^t -> 0 below 1e-26
    np.testing.assert_allclose(formula_profile(mu, lr, steps), whitening_profile(mu), rtol=1e-12)
    np.testing.assert_allclose(normalised(whitening_profile(mu)), normalised(1 / np.sqrt(mu)), rtol=1e-14)


@given(mu=eigenvalue_arrays(), lr_frac=st.floats(0.01, 1.9), steps=st.integers(0, 2000), r=st.floats(0, 10))
def test_raw_profile_reduces_to_profile_plus_floor(mu, lr_frac, steps, r):
    lr = lr_frac / mu.max()
    raw = raw_formula_profile(mu, lr, steps, r)
    plain = formula_profile(mu, lr, steps)
    np.testing.assert_allclose(raw**2, plain**2 + r**2, rtol=1e-10, atol=1e-300)
    tau = lr * steps
    np.testing.assert_allclose(raw_gradient_flow_profile(mu, tau, r) ** 2, gradient_flow_profile(mu, tau) ** 2 + r**2,
                               rtol=1e-10, atol=1e-300)


def test_broadcasting_over_lr_and_steps():
    mu = np.array([2.0, 1.0, 0.5])
    out = formula_profile(mu, np.array([[0.1], [0.2]]), np.array([1, 10, 100]))
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[1, 2], formula_profile(mu, 0.2, 100))
    assert gradient_flow_profile(mu, np.array([1.0, 2.0])).shape == (2, 3)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: formula_profile([1.0, 0.0], 0.1, 10), "positive"),
        (lambda: formula_profile([1.0, -1.0], 0.1, 10), "positive"),
        (lambda: formula_profile([1.0, np.nan], 0.1, 10), "finite"),
        (lambda: formula_profile([[1.0]], 0.1, 10), "1-D"),
        (lambda: formula_profile([1.0], 0.0, 10), "lr"),
        (lambda: formula_profile([1.0], -1.0, 10), "lr"),
        (lambda: formula_profile([1.0], 0.1, -1), "steps"),
        (lambda: formula_profile([1.0], 1.5, 2.5), "integers"),
        (lambda: gradient_flow_profile([1.0], -1.0), "tau"),
        (lambda: raw_formula_profile([1.0], 0.1, 3, -0.1), "init_ratio"),
    ],
)
def test_bad_input_raises_formula_input_error(call, words):
    with pytest.raises(FormulaInputError, match=words):
        call()


@pytest.mark.parametrize("lr", [2.0, 2.5, 100.0])
def test_divergent_lr_is_refused(lr):
    with pytest.raises(DivergentLearningRateError, match="diverges"):
        formula_profile([1.0, 0.5], lr, 10)


@given(x=st.floats(0.0, 1.999), steps=st.integers(0, 500))
def test_growth_factor_matches_textbook_form(x, steps):
    from linearcnn.theory import growth_factor

    expected = 1 - (1 - x) ** steps
    assert growth_factor(x, steps) == pytest.approx(expected, rel=1e-9, abs=1e-13)
    assert float(growth_factor(torch.tensor(x, dtype=torch.float64), steps)) == pytest.approx(expected, rel=1e-9, abs=1e-13)

"""The SymPy derivation: every check holds, and its results agree with independent computations."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy.optimize import brentq, minimize_scalar

from linearcnn.theory import derive, x_star


@pytest.fixture(scope="module")
def derivation():
    return derive()


def test_every_symbolic_check_holds(derivation):
    checks = [(step.key, check) for step in derivation.steps for check in step.checks]
    assert len(checks) >= 8
    failing = [(key, check.label, check.value) for key, check in checks if not check.holds]
    assert not failing, failing


def test_derivation_has_all_parts(derivation):
    keys = [step.key for step in derivation.steps]
    assert keys == ["model", "solution", "random_labels", "init_term", "limits", "divergence", "stable_form"]
    for name in ["solution", "profile", "raw_profile", "gradient_flow_profile", "whitening_profile",
                 "early_profile", "x_star", "stable_region", "stable_growth"]:
        assert name in derivation.results


def test_solution_matches_iterating_the_recurrence_in_high_precision(derivation):
    # Independent: iterate c(t+1) = c(t) - eta (mu c(t) - z) with mpmath at 40 digits.
    sym = derivation.symbols
    solution = derivation.results["solution"]
    mpmath.mp.dps = 40
    for mu, eta, c0, z in [(0.7, 0.3, 0.2, -1.1), (3.0, 0.6, -0.5, 0.4), (1e-3, 10.0, 1.0, 2.0)]:
        c = mpmath.mpf(c0)
        for t in range(60):
            closed = solution.subs({sym["mu"]: sp.Rational(str(mu)), sym["eta"]: sp.Rational(str(eta)),
                                    sym["c0"]: sp.Rational(str(c0)), sym["z"]: sp.Rational(str(z)), sym["t"]: t})
            assert abs(float(closed) - float(c)) <= 1e-12 * max(1.0, abs(float(c)))
            c = c - mpmath.mpf(str(eta)) * (mpmath.mpf(str(mu)) * c - mpmath.mpf(str(z)))


def test_x_star_is_the_root_and_the_maximum():
    # Independent root finding of 2x e^-x = 1 - e^-x and maximisation of (1 - e^{-x}) / sqrt(x).
    root = brentq(lambda x: 2 * x * math.exp(-x) - (1 - math.exp(-x)), 0.5, 3.0, xtol=1e-15)
    assert x_star() == pytest.approx(root, rel=1e-12)
    best = minimize_scalar(lambda x: -(1 - math.exp(-x)) / math.sqrt(x), bounds=(0.1, 10), method="bounded",
                           options={"xatol": 1e-10})
    assert best.x == pytest.approx(x_star(), rel=1e-6)


def test_raw_energy_expectation_matches_monte_carlo(derivation):
    # Independent check of the sympy.stats expectation, at a finite K, by simulation:
    # a_k ~ N(0, sigma^2) i.i.d., z ~ N(0, s^2 mu), d = (z/mu - abar) g, energy^2 = mean_k (a_k + d)^2.
    expr = derivation.results["raw_energy_sq"]
    sym = derivation.symbols
    K, mu, eta, t, s, sigma = 3, 0.5, 0.4, 7, 1.3, 0.8
    expected = float(expr.subs({sym["K"]: K, sym["mu"]: mu, sym["eta"]: eta, sym["t"]: t, sym["s"]: s,
                                sym["sigma"]: sigma}))
    rng = np.random.default_rng(0)
    trials = 400_000
    a = rng.normal(0.0, sigma, size=(trials, K))
    z = rng.normal(0.0, s * math.sqrt(mu), size=(trials, 1))
    g = 1 - (1 - eta * mu) ** t
    d = (z / mu - a.mean(axis=1, keepdims=True)) * g
    samples = ((a + d) ** 2).mean(axis=1)
    stderr = samples.std() / math.sqrt(trials)
    assert abs(samples.mean() - expected) < 4 * stderr, (samples.mean(), expected, stderr)


def test_stable_region_is_open_interval_0_2(derivation):
    assert derivation.results["stable_region"] == sp.Interval.open(0, 2)

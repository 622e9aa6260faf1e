"""Whitening limit (Thm 4.3) against actual matrix gradient descent of a filter bank.

For a drawn SPD covariance C (dimension 2..30, condition number up to 1e6) a bank of K = d filters
is trained by gradient descent on the quadratic loss L(W) = sum_k (w_k^T C w_k / 2 - b_k . w_k),
whose label-correlation vectors b_k have the random-label statistics of PAPER Sec. 2 exactly:
sum_k b_k b_k^T = C (B = R diag(sqrt(mu)) U^T with R orthogonal). GD is W <- W - lr (W C - B).
Long runs (up to ~1e8 steps) are computed by composing the GD step with itself (repeated
squaring of the affine map W -> W M + N), which is t steps of GD in exact arithmetic; short runs
use a plain loop. Tolerances: 1e-8 relative for profiles, 1e-7 for W^T W C = I.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from linearcnn.theory import formula_profile, whitening_profile


def random_spd(d: int, log_cond: float, seed: int):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    logs = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, size=d - 2)]))[::-1] if d > 2 else np.array([1.0, 0.0])
    mu = 10.0 ** (-log_cond * (1 - logs))  # max 1, min 10^-log_cond
    mu = np.sort(mu)[::-1]
    cov = (u * mu) @ u.T
    r, _ = np.linalg.qr(rng.normal(size=(d, d)))
    targets = (r * np.sqrt(mu)) @ u.T  # (K=d, d): rows b_k, targets.T @ targets == cov
    return mu, u, cov, targets


def gd_power(cov, targets, lr, steps):
    """W after `steps` GD steps from W = 0, by repeated squaring of W -> W M + N."""
    d = cov.shape[0]
    m_pow, n_pow = np.eye(d) - lr * cov, lr * targets  # one step
    m_acc, n_acc = np.eye(d), np.zeros_like(targets)  # zero steps
    while steps:
        if steps & 1:
            m_acc, n_acc = m_acc @ m_pow, n_acc @ m_pow + n_pow
        m_pow, n_pow = m_pow @ m_pow, n_pow @ m_pow + n_pow
        steps >>= 1
    return n_acc  # W(0) = 0


def gd_loop(cov, targets, lr, steps):
    w = np.zeros_like(targets)
    for _ in range(steps):
        w = w - lr * (w @ cov - targets)
    return w


def bank_profile(w, u):
    projections = w @ u  # (K, d): w_k . u_i
    return np.sqrt(np.mean(projections**2, axis=0))


def normalised(p):
    return p / p.max()


@given(d=st.integers(2, 30), log_cond=st.floats(0.0, 6.0), lr_frac=st.floats(0.1, 1.9), seed=st.integers(0, 2**31))
def test_gradient_descent_converges_to_whitening(d, log_cond, lr_frac, seed):
    mu, u, cov, targets = random_spd(d, log_cond, seed)
    lr = lr_frac / mu.max()
    slowest = min(lr * mu.min(), 2 - lr * mu.max())  # |1 - lr mu| <= 1 - slowest
    steps = 2 * math.ceil(40 / slowest)  # |1 - lr mu|^steps < e^-80
    w = gd_power(cov, targets, lr, steps)
    wtw = w.T @ w
    err = np.linalg.norm(wtw @ cov - np.eye(d)) / math.sqrt(d)
    assert err < 1e-7, f"W^T W C - I: {err:.3g}"  # W^T W = C^{-1}: a whitening bank
    np.testing.assert_allclose(normalised(bank_profile(w, u)), normalised(1 / np.sqrt(mu)), rtol=1e-8)
    np.testing.assert_allclose(normalised(bank_profile(w, u)), normalised(whitening_profile(mu)), rtol=1e-8)
    out_cov = w @ cov @ w.T  # layer output covariance: identity (flat spectrum)
    np.testing.assert_allclose(out_cov, np.eye(d), atol=1e-7)


@given(d=st.integers(2, 30), log_cond=st.floats(0.0, 6.0), lr_frac=st.floats(0.1, 1.9),
       log_steps=st.floats(0, 7), seed=st.integers(0, 2**31))
def test_gradient_descent_profile_equals_formula_at_every_step_count(d, log_cond, lr_frac, log_steps, seed):
    mu, u, cov, targets = random_spd(d, log_cond, seed)
    lr = lr_frac / mu.max()
    steps = int(10**log_steps)
    w = gd_power(cov, targets, lr, steps)
    formula = formula_profile(mu, lr, steps)
    # The bank's profile is sqrt(1/K) * |g| / sqrt(mu): the formula exactly, up to the constant.
    np.testing.assert_allclose(bank_profile(w, u) * math.sqrt(d), formula, rtol=1e-7, atol=1e-9 * formula.max())


@given(d=st.integers(2, 12), log_cond=st.floats(0.0, 2.0), seed=st.integers(0, 2**31))
def test_plain_gradient_descent_loop_agrees(d, log_cond, seed):
    mu, u, cov, targets = random_spd(d, log_cond, seed)
    lr = 1.0 / mu.max()
    steps = 2 * math.ceil(35 / (lr * mu.min()))
    w = gd_loop(cov, targets, lr, steps)
    np.testing.assert_allclose(w, gd_power(cov, targets, lr, steps), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(normalised(bank_profile(w, u)), normalised(1 / np.sqrt(mu)), rtol=1e-8)

"""Fit the linear-CNN formula to a measured energy profile.

The family is the theory module's lambdified profile (no second copy of the formula here):

* one parameter, gradient flow: e(mu; tau) = (1 - exp(-tau mu)) / sqrt(mu)  (default);
* one parameter, discrete steps at a given lr: e(mu; lr, t) = (1 - (1 - lr mu)^t) / sqrt(mu);
* two parameters, raw (not init-subtracted) weights: sqrt(g^2 / mu + r^2).

Similarity is Pearson correlation (PAPER Sec. 1), which ignores the formula's free constant.
The search is global over log tau: a dense vectorised grid over the whole range where the
normalised family changes shape (from the early regime tau*max(mu) = 1e-4, where it is
sqrt(mu), to the whitened regime tau*min(mu) = 1e4, where it is 1/sqrt(mu)), then a bounded
Brent refinement around the best grid points. Outside that range the normalised family is
constant, so the search covers every profile the family can produce.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import spearmanr

from linearcnn import theory
from linearcnn.energy import pearson
from linearcnn.errors import LinearCNNInputError
from linearcnn.theory.numeric import evaluate_unchecked

GRID_POINTS = 384
EARLY_X = 1e-4  # tau * max(mu) below this: the normalised family equals sqrt(mu) to ~1e-4
WHITE_X = 1e4   # tau * min(mu) above this: the normalised family equals 1/sqrt(mu)


@dataclass
class FitResult:
    """The best member of the formula's family for one measured profile."""

    family: str                  # "gradient_flow", "steps" or "raw_gradient_flow" / "raw_steps"
    correlation: float           # Pearson correlation of profile and fitted formula
    spearman: float              # Spearman rank correlation of the same pair
    tau: float                   # fitted gradient-flow time (= lr * steps for the steps family)
    steps: float | None          # fitted steps (steps family only)
    lr: float | None
    init_ratio: float | None     # fitted r = sigma/s relative to the profile scale (raw families)
    profile: NDArray[np.float64]         # the measured profile, normalised to max 1
    fitted_profile: NDArray[np.float64]  # the formula at the fit, normalised to max 1
    eigenvalues: NDArray[np.float64]
    evaluations: int             # number of formula evaluations the search used
    interval: dict[str, list[float]] = field(default_factory=dict)  # bootstrap 95% intervals

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("profile", "fitted_profile", "eigenvalues"):
            out[key] = np.asarray(out[key]).tolist()
        return out


def _normalise(p: NDArray[np.float64]) -> NDArray[np.float64]:
    peak = np.max(np.abs(p), axis=-1, keepdims=True)
    return np.divide(p, peak, out=np.zeros_like(p, dtype=float), where=peak > 0)


def _check_inputs(profile: ArrayLike, eigenvalues: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = np.asarray(profile, dtype=np.float64)
    mu = np.asarray(eigenvalues, dtype=np.float64)
    if p.ndim != 1 or mu.ndim != 1 or p.shape != mu.shape:
        raise LinearCNNInputError(
            f"profile has shape {p.shape} but eigenvalues have shape {mu.shape}; expected two 1-D arrays of equal length"
        )
    if p.size < 3:
        raise LinearCNNInputError(f"profile has {p.size} components; a fit needs at least 3")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(mu))):
        raise LinearCNNInputError("profile and eigenvalues must be finite; found NaN or Inf")
    if np.all(p == p[0]):
        raise LinearCNNInputError("profile is constant (e.g. all-zero weights); nothing to correlate with")
    if mu.max() <= 0:
        raise LinearCNNInputError("eigenvalues are all <= 0; the patch statistics are degenerate")
    floor = mu.max() * 1e-12
    if np.any(mu < floor):
        warnings.warn(
            f"{int(np.sum(mu < floor))} eigenvalue(s) below 1e-12 x the largest (degenerate patch statistics); "
            "floored at that value for the fit",
            stacklevel=3,
        )
        mu = np.maximum(mu, floor)
    return p, mu


def fit_formula(
    profile: ArrayLike,
    eigenvalues: ArrayLike,
    *,
    lr: float | None = None,
    raw: bool = False,
    grid_points: int = GRID_POINTS,
) -> FitResult:
    """Fit the formula's family to `profile` (d,) given the patch eigenvalues `eigenvalues` (d,).

    Args:
        profile: measured energy profile, ordered like `eigenvalues` (any scale).
        eigenvalues: patch-covariance eigenvalues (variances), same order as the profile.
        lr: if given, fit the number of steps of the discrete formula at this learning rate
            (needs lr * max(eigenvalue) <= 1); otherwise fit gradient-flow time tau.
        raw: fit the two-parameter raw-weights family (profile of weights that still contain
            their initialisation) instead of the init-subtracted one.
        grid_points: points of the global log-tau grid before refinement.

    Returns:
        FitResult with Pearson and Spearman correlations, tau (and steps), the normalised
        profile and fitted formula, and the number of formula evaluations used.
    """
    p, mu = _check_inputs(profile, eigenvalues)
    if lr is not None:
        if not lr > 0:
            raise LinearCNNInputError(f"lr must be > 0, got {lr}", parameter="lr")
        if lr * mu.max() > 1:
            raise LinearCNNInputError(
                f"lr={lr:g} gives lr * max eigenvalue = {lr * mu.max():.3g} > 1; the steps fit needs <= 1 "
                "(fit gradient-flow tau instead)",
                parameter="lr",
            )
    lo, hi = math.log(EARLY_X / mu.max()), math.log(WHITE_X / mu.min())
    grid = np.linspace(lo, hi, grid_points)  # log tau
    counter = [0]

    # Validate the whole search range once through the public functions, then evaluate the
    # same lambdified expressions without re-checking inside the search loop.
    if lr is None:
        theory.gradient_flow_profile(mu, math.exp(hi))
    else:
        theory.formula_profile(mu, lr, math.exp(hi) / lr)

    def family(log_tau: np.ndarray, ratio: np.ndarray | float = 0.0) -> np.ndarray:
        tau = np.exp(log_tau)
        counter[0] += int(np.size(tau))
        if lr is None:
            base = evaluate_unchecked("flow_profile", mu, [tau])  # (n, d)
        else:
            base = evaluate_unchecked("profile_stable", mu, [lr, tau / lr])
        if not raw:
            return base
        # Raw family: sqrt(base^2 + r^2), r measured relative to the base profile's maximum.
        init_ratio = np.asarray(ratio) * np.max(base, axis=-1)
        if lr is None:
            return evaluate_unchecked("raw_flow_profile", mu, [tau, init_ratio])
        return evaluate_unchecked("raw_profile_stable", mu, [lr, tau / lr, init_ratio])

    def scores_of(candidates: np.ndarray) -> np.ndarray:
        """Pearson correlation of each row (n, d) with the profile; 0 for a constant row."""
        return pearson(candidates, p, undefined=0.0)

    if not raw:
        scores = scores_of(family(grid))
        best_log_tau, best_ratio = _refine_1d(lambda lt: scores_of(family(np.atleast_1d(lt)))[0],
                                              grid, scores), None
    else:
        # r = 0 belongs to the raw family: start from the one-parameter optimum, so the
        # two-parameter fit is never worse than it.
        scores = scores_of(family(grid))
        flow_log_tau = _refine_1d(lambda lt: scores_of(family(np.atleast_1d(lt)))[0], grid, scores)
        candidates = [(scores_of(family(np.array([flow_log_tau])))[0], flow_log_tau, 0.0)]
        ratios = np.logspace(-3, 2, 40)
        log_tau_2d, ratio_2d = np.meshgrid(grid[::4], ratios, indexing="ij")  # (n_tau, n_r)
        scores_2d = scores_of(family(log_tau_2d.ravel(), ratio_2d.ravel()))
        i = int(np.argmax(scores_2d))
        candidates.append((scores_2d[i], float(log_tau_2d.ravel()[i]), float(ratio_2d.ravel()[i])))

        def negative(params: np.ndarray) -> float:
            lt = float(np.clip(params[0], lo, hi))
            return -scores_of(family(np.array([lt]), np.array([math.exp(params[1])])))[0]

        for _, lt, ratio in list(candidates):
            start = np.array([lt, math.log(max(ratio, 1e-4))])
            refined = minimize(negative, start, method="Nelder-Mead",
                               options={"xatol": 1e-7, "fatol": 1e-13, "maxiter": 600})
            candidates.append((-refined.fun, float(np.clip(refined.x[0], lo, hi)), math.exp(refined.x[1])))
        _, best_log_tau, best_ratio = max(candidates, key=lambda c: c[0])
    fitted = family(np.array([best_log_tau]), np.array([best_ratio or 0.0]))[0]
    tau = math.exp(best_log_tau)
    correlation = float(scores_of(fitted[None, :])[0])
    spearman = float(spearmanr(fitted, p).statistic) if np.ptp(fitted) > 0 else 0.0
    family_name = ("raw_" if raw else "") + ("steps" if lr is not None else "gradient_flow")
    return FitResult(
        family=family_name,
        correlation=correlation,
        spearman=spearman,
        tau=tau,
        steps=tau / lr if lr is not None else None,
        lr=lr,
        init_ratio=best_ratio,
        profile=_normalise(p),
        fitted_profile=_normalise(fitted),
        eigenvalues=mu,
        evaluations=counter[0],
    )


def _refine_1d(
    score: Callable[[float], float], grid: NDArray[np.float64], scores: NDArray[np.float64], starts: int = 3
) -> float:
    """Brent refinement of the best `starts` grid maxima; never returns worse than the grid."""
    best_x, best_s = float(grid[int(np.argmax(scores))]), float(np.max(scores))
    step = grid[1] - grid[0]
    local_max = np.flatnonzero(
        (scores >= np.roll(scores, 1)) & (scores >= np.roll(scores, -1))
        | (np.arange(grid.size) == 0) | (np.arange(grid.size) == grid.size - 1)
    )
    for i in sorted(local_max, key=lambda k: -scores[k])[:starts]:
        a, b = max(grid[0], grid[i] - step), min(grid[-1], grid[i] + step)
        res = minimize_scalar(lambda lt: -score(lt), bounds=(a, b), method="bounded", options={"xatol": 1e-7})
        if -res.fun > best_s:
            best_x, best_s = float(res.x), float(-res.fun)
    return best_x


def fit_filters(
    weights: ArrayLike,
    eigenvalues: ArrayLike,
    eigenvectors: ArrayLike,
    *,
    lr: float | None = None,
    raw: bool = False,
    bootstrap: int = 200,
    seed: int = 0,
) -> FitResult:
    """Energy profile of a filter bank, its fit, and bootstrap 95% intervals over filters.

    The bootstrap resamples the K filters with replacement `bootstrap` times, recomputes the
    profile and the fit, and reports percentile intervals for the correlation and tau.
    """
    from linearcnn.energy import energy_profile

    w = np.asarray(weights, dtype=np.float64)
    w = w.reshape(w.shape[0], -1)  # (K, d)
    result = fit_formula(energy_profile(w, eigenvectors), eigenvalues, lr=lr, raw=raw)
    if bootstrap > 0 and w.shape[0] > 1:
        rng = np.random.default_rng(seed)
        correlations, taus = [], []
        for _ in range(bootstrap):
            sample = w[rng.integers(0, w.shape[0], size=w.shape[0])]
            profile = energy_profile(sample, eigenvectors)
            if np.ptp(profile) == 0:
                continue
            fit = fit_formula(profile, eigenvalues, lr=lr, raw=raw, grid_points=128)
            correlations.append(fit.correlation)
            taus.append(fit.tau)
        if correlations:
            result.interval = {
                "correlation": np.percentile(correlations, [2.5, 97.5]).tolist(),
                "tau": np.percentile(taus, [2.5, 97.5]).tolist(),
                "samples": [len(correlations)],
            }
    return result

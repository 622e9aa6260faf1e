"""The fit's search, vectorised: the formula's family on one spectrum evaluated for whole vectors
of its parameters at once, and the global search over them for many profiles together.

`linearcnn.fit` states what is fitted and when a fit is no fit; this module finds the optimum.

* The family (`Family`) is the theory module's lambdified profile (`evaluate_rows`: one numpy
  broadcast gives the (n, d) profiles of n parameter values; no second copy of the formula).
* Correlations are dot products of centred unit-norm rows: all candidates against all profiles
  in one matrix product (`_centred`, `unit_rows`; `linearcnn.energy.pearson`'s arithmetic).
* Log tau (`optimum`): a grid over the whole range, then the `REFINE_STARTS` best local maxima
  of each profile's grid refined together: each round evaluates `REFINE_POINTS` points across
  every bracket and keeps the two cells beside the best, until every bracket is narrower than
  `PARABOLA_WIDTH`, then `PARABOLA_STEPS` parabola steps finish it; a bracket that cannot catch
  up with its profile's best is dropped.
* The raw families' (log tau, log r) (`_refine_box`): from the one-parameter optimum at r = 0
  and the best local maxima of a coarse grid, a damped Newton search on finite differences,
  all starts at once, with axis-wise steps that cross the family's flat regions.

Many profiles (a bootstrap's resamples) share the grids, so each grid is evaluated once and
scored by one matrix product; the refinements run in batches of about `_BATCH_ELEMENTS` values.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from linearcnn import theory
from linearcnn.errors import LinearCNNInputError
from linearcnn.theory.numeric import evaluate_rows

EARLY_X = 1e-4  # tau * max(mu) below this: the normalised family equals sqrt(mu) to ~1e-4
WHITE_X = 1e4   # tau * min(mu) above this: the normalised family equals 1/sqrt(mu)
RATIO_MIN = 1e-4  # raw families: log r is searched on [RATIO_MIN, RATIO_MAX], and r = 0 is tried
RATIO_MAX = 1e2   # r above this: the normalised raw family is its r -> inf limit to ~1/(4 r^2) = 2.5e-5
REFINE_STARTS = 3         # grid maxima refined: the best local maxima, the two ends included
REFINE_POINTS = 17        # points across each log-tau bracket per refinement round
REFINE_TOLERANCE = 1e-8   # raw Newton steps shorter than this: refinement ends
PARABOLA_WIDTH = 2e-3     # a log-tau bracket this narrow is finished by parabola steps (the correlation is smooth there)
PARABOLA_STEPS = 2        # parabola steps, each with 32 times closer points than the last
RAW_RATIOS = 40           # raw families: the start grid is every 4th log tau x RAW_RATIOS r in [1e-3, 1e2]

_SCORE_NOISE = 1e-14       # a bracket within this (rounding) of catching up is refined on
_STENCIL = 1e-4           # raw Newton search: finite-difference spacing in log tau and log r
_MAX_STEP = 2.0            # raw Newton search: longest step, in log tau and log r
_LINE_STEPS = 8            # raw Newton search: points along each step, at 1, 1/2, ... 1/128 of it
_MAX_ROUNDS = 200          # raw Newton search: rounds at most
_BATCH_ELEMENTS = 1 << 21  # formula values per refinement batch when many profiles are fitted at once


class Family:
    """The formula's family on one spectrum, as the theory module's lambdified profiles: rows of
    profiles for vectors of log tau (and r), with a count of the rows evaluated."""

    def __init__(self, mu: NDArray[np.float64], lr: float | None, raw: bool) -> None:
        if lr is not None:
            if not lr > 0:
                raise LinearCNNInputError(f"lr must be > 0, got {lr}", parameter="lr")
            if lr * mu.max() > 1:
                raise LinearCNNInputError(
                    f"lr={lr:g} gives lr * max eigenvalue = {lr * mu.max():.3g} > 1; the steps fit needs <= 1 "
                    "(fit gradient-flow tau instead)",
                    parameter="lr",
                )
        self.mu, self.lr, self.raw, self.evaluations = mu, lr, raw, 0
        self.log_tau_range = (math.log(EARLY_X / mu.max()), math.log(WHITE_X / mu.min()))
        # Validate the whole search range once through the public functions; the search then
        # evaluates the same lambdified expressions without re-checking.
        if lr is None:
            theory.gradient_flow_profile(mu, math.exp(self.log_tau_range[1]))
        else:
            theory.formula_profile(mu, lr, math.exp(self.log_tau_range[1]) / lr)

    def __call__(self, log_tau: NDArray[np.float64], ratio: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """(n, d) profiles at log tau (n,): the raw family at r = `ratio` (n,), r relative to the
        init-subtracted profile's maximum, or that init-subtracted profile when `ratio` is None."""
        tau = np.exp(log_tau)
        self.evaluations += int(tau.size)
        mu, lr = self.mu, self.lr
        base = evaluate_rows("flow_profile", mu, [tau]) if lr is None else evaluate_rows("profile_stable", mu, [lr, tau / lr])
        if ratio is None:
            return base
        return self._raw(tau, ratio * np.max(base, axis=-1))

    def raw_rows(self, log_tau: NDArray[np.float64], init_ratio: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, d) raw profiles at log tau (n,) and absolute r = `init_ratio` (n,)."""
        self.evaluations += int(np.size(log_tau))
        return self._raw(np.exp(log_tau), init_ratio)

    def _raw(self, tau: NDArray[np.float64], init_ratio: NDArray[np.float64]) -> NDArray[np.float64]:
        lr = self.lr
        if lr is None:
            return evaluate_rows("raw_flow_profile", self.mu, [tau, init_ratio])
        return evaluate_rows("raw_profile_stable", self.mu, [lr, tau / lr, init_ratio])


def unit_rows(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows centred and scaled to unit norm: their dot products are Pearson correlations; a
    constant row becomes zeros (correlation 0, as the search's `pearson(..., undefined=0)`)."""
    x, inverse_norm = _centred(rows)
    return x * inverse_norm[..., None]


def _centred(rows: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rows (..., d) minus their means, and 1 / their norms (...) (0 for a constant row): a dot
    product with a unit row, times the inverse norm, is `pearson`'s correlation, batched."""
    x = rows - rows.sum(axis=-1, keepdims=True) * (1.0 / rows.shape[-1])
    squares = np.einsum("...d,...d->...", x, x)
    if squares.size and np.isfinite(squares.max()) and squares.min() > 1e-250:
        return x, 1.0 / np.sqrt(squares)
    # values near the ends of float64, or constant rows: scale each row by its peak first, as `pearson`
    x = x / np.where((peak := np.max(np.abs(x), axis=-1, keepdims=True)) > 0, peak, 1.0)
    squares = np.einsum("...d,...d->...", x, x)
    return x, np.divide(1.0, np.sqrt(squares), out=np.zeros_like(squares), where=squares > 0)


def optimum(family: Family, profiles: NDArray[np.float64], grid_points: int) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The best log tau (B,) of each profile (B, d), and the best r (B,) for raw families (else None).

    The grid and (raw) start grid are evaluated once for all profiles and scored by one matrix
    product each; the refinement runs in batches of profiles of about `_BATCH_ELEMENTS` values."""
    if grid_points < 3:
        raise LinearCNNInputError(f"grid_points must be at least 3, got {grid_points}", parameter="grid_points")
    lo, hi = family.log_tau_range
    targets = unit_rows(profiles)  # (B, d)
    grid = np.linspace(lo, hi, grid_points)  # log tau
    grid_rows, grid_inverse = _centred(family(grid))
    grid_scores = (targets @ grid_rows.T) * grid_inverse  # (B, n)
    rows = REFINE_STARTS * REFINE_POINTS
    batch = max(1, _BATCH_ELEMENTS // (rows * targets.shape[1]))
    flow = [_refine_tau(family, targets[i:i + batch], grid, grid_scores[i:i + batch]) for i in range(0, len(targets), batch)]
    log_tau = np.concatenate([f[0] for f in flow])
    if not family.raw:
        return log_tau, None
    # r = 0 belongs to the raw family: start from the one-parameter optimum, so the two-parameter
    # fit is never worse than it; and from the best local maxima of a coarse (log tau, r) grid
    # (the family can peak both at a finite r and in its r -> inf limit).
    n = len(targets)
    coarse_tau, coarse_ratio = np.meshgrid(grid[::4], np.logspace(-3, 2, RAW_RATIOS), indexing="ij")  # (nt, nr)
    peaks = np.max(family(grid[::4]), axis=1)  # (nt,) r is relative to the init-subtracted profile's maximum
    coarse_rows, coarse_inverse = _centred(family.raw_rows(coarse_tau.ravel(), (coarse_ratio * peaks[:, None]).ravel()))
    coarse_scores = (targets @ coarse_rows.T) * coarse_inverse  # (B, nt * nr)
    starts = _local_maxima(coarse_scores.reshape(n, *coarse_tau.shape), REFINE_STARTS)  # (B, k) flat indices
    b = np.arange(n)[:, None]
    candidates = [(np.einsum("bd,bd->b", unit_rows(family(log_tau, np.zeros(n))), targets), log_tau, np.zeros(n))]
    candidates += [(coarse_scores[b, starts][:, k], coarse_tau.ravel()[starts[:, k]], coarse_ratio.ravel()[starts[:, k]])
                   for k in range(starts.shape[1])]
    for _, start_tau, start_ratio in list(candidates):
        start_log_ratio = np.log(np.clip(start_ratio, RATIO_MIN, RATIO_MAX))
        parts = [_refine_box(family, targets[i:i + batch], start_tau[i:i + batch], start_log_ratio[i:i + batch])
                 for i in range(0, n, batch)]
        t, r, score = (np.concatenate([part[k] for part in parts]) for k in range(3))
        candidates.append((score, t, np.exp(r)))
    # The first best candidate; a later one only when higher beyond rounding (so r = 0, the
    # one-parameter fit, stands unless the init term genuinely improves the correlation).
    best_score, best_tau, best_ratio = (c.copy() for c in candidates[0])
    for score, t, ratio in candidates[1:]:
        better = score > best_score + _SCORE_NOISE
        best_score[better], best_tau[better], best_ratio[better] = score[better], t[better], ratio[better]
    return best_tau, best_ratio


def _local_maxima(scores: NDArray[np.float64], count: int) -> NDArray[np.intp]:
    """Flat indices (B, count) of the `count` highest local maxima of each (B, n1, n2) grid, 8
    neighbours, edges included; the highest is repeated where a grid has fewer."""
    padded = np.pad(scores, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    n1, n2 = scores.shape[1:]
    peak = np.ones(scores.shape, dtype=bool)
    for i in (0, 1, 2):
        for j in (0, 1, 2):
            if (i, j) != (1, 1):
                peak &= scores >= padded[:, i:i + n1, j:j + n2]
    ranked = np.where(peak, scores, -np.inf).reshape(len(scores), -1)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :count]
    return np.where(np.take_along_axis(ranked, order, axis=1) > -np.inf, order, order[:, :1])


def _refine_tau(
    family: Family, targets: NDArray[np.float64], grid: NDArray[np.float64], grid_scores: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Refine the `REFINE_STARTS` best local maxima of each row of `grid_scores` (B, n) (the
    correlations of the unit `targets` (B, d) with the family on `grid`), all brackets at once.

    Each bracket is one grid step either side of its maximum; each round evaluates `REFINE_POINTS`
    points across it and keeps the cells beside the best, until it is `PARABOLA_WIDTH` narrow. Then
    `PARABOLA_STEPS` steps to the vertex of the parabola through three points about the current
    point (half the bracket apart, then 32 times closer each step): near a smooth maximum the
    correlation is quadratic, so two steps place it as well as bisecting down to 1e-8 would, in a
    third of the rounds. Returns the best log tau (B,) and its score (B,), never worse than the
    grid's best (a refined maximum replaces it only when higher; so is every point evaluated)."""
    b = np.arange(len(targets))
    best = np.argmax(grid_scores, axis=1)
    best_x, best_s = grid[best], grid_scores[b, best]
    local = (grid_scores >= np.roll(grid_scores, 1, axis=1)) & (grid_scores >= np.roll(grid_scores, -1, axis=1))
    local[:, [0, -1]] = True
    ranked = np.where(local, grid_scores, -np.inf)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :REFINE_STARTS]  # (B, k): best local maxima first
    owner, which = np.nonzero(np.take_along_axis(ranked, order, axis=1) > -np.inf)  # (V,) each bracket's row, rank
    step = grid[1] - grid[0]
    centre = grid[order[owner, which]]
    low, high = np.maximum(centre - step, grid[0]), np.minimum(centre + step, grid[-1])
    x_best, s_best = centre.copy(), np.full(centre.size, -np.inf)
    row_best, mine = best_s.copy(), targets[owner]  # (B,) best score so far; (V, d) each bracket's target
    fraction, m = np.linspace(0.0, 1.0, REFINE_POINTS), REFINE_POINTS
    alive = np.arange(owner.size)
    while alive.size and np.max(high[alive] - low[alive]) > PARABOLA_WIDTH:
        x = low[alive, None] + (high - low)[alive, None] * fraction  # (A, m)
        rows, inverse = _centred(family(x.ravel()).reshape(*x.shape, -1))  # (A, m, d), (A, m)
        scores = np.einsum("amd,ad->am", rows, mine[alive]) * inverse
        a, j = np.arange(alive.size), np.argmax(scores, axis=1)
        left, right, top = np.maximum(j - 1, 0), np.minimum(j + 1, m - 1), scores[a, j]
        better = top > s_best[alive]
        x_best[alive[better]], s_best[alive[better]] = x[a, j][better], top[better]
        low[alive], high[alive] = x[a, left], x[a, right]
        # Drop a bracket that cannot catch up: near a maximum the function is concave, so the
        # bracket holds at most its best plus its steepest step beside it (twice that, for margin).
        np.maximum.at(row_best, owner[alive], top)
        gap = np.maximum(top - scores[a, left], top - scores[a, right])
        alive = alive[s_best[alive] + 2 * gap + _SCORE_NOISE >= row_best[owner[alive]]]

    def keep(points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Score `points` (A, m) of the alive brackets, keep each bracket's best when higher; the scores."""
        rows, inverse = _centred(family(points.ravel()).reshape(*points.shape, -1))  # (A, m, d), (A, m)
        scores = np.einsum("amd,ad->am", rows, mine[alive]) * inverse
        a, j = np.arange(alive.size), np.argmax(scores, axis=1)
        better = scores[a, j] > s_best[alive]
        x_best[alive[better]], s_best[alive[better]] = points[a, j][better], scores[a, j][better]
        return scores

    if alive.size:
        centre, h = x_best[alive].copy(), (high[alive] - low[alive]) / 2  # (A,)
        for _ in range(PARABOLA_STEPS):
            points = np.clip(centre[:, None] + h[:, None] * np.array([-1.0, 0.0, 1.0]), grid[0], grid[-1])  # (A, 3)
            s = keep(points)
            curvature = s[:, 0] - 2 * s[:, 1] + s[:, 2]  # < 0 where the three points bracket a maximum
            concave = curvature < 0
            shift = np.where(concave, 0.5 * h * (s[:, 0] - s[:, 2]) / np.where(concave, curvature, -1.0), 0.0)
            centre, h = np.clip(points[:, 1] + np.clip(shift, -h, h), grid[0], grid[-1]), h / 32
        keep(centre[:, None])
    for k in range(REFINE_STARTS):  # in the order of the grid maxima, a later one only when higher
        mine = which == k
        rows_k, better = owner[mine], s_best[mine] > best_s[owner[mine]]
        best_x[rows_k[better]], best_s[rows_k[better]] = x_best[mine][better], s_best[mine][better]
    return best_x, best_s


def _refine_box(
    family: Family, targets: NDArray[np.float64], log_tau: NDArray[np.float64], log_ratio: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Maximise the raw family's correlation over (log tau, log r) from one start per unit target
    row (B, d), all searches at once: a damped Newton method on finite differences.

    Each round evaluates a 3 x 3 stencil of spacing `_STENCIL` around the current point (inside
    the search range), `_LINE_STEPS` points along the Newton step from its centre (1, 1/2, ...
    of the step with the Hessian's absolute eigenvalues, so that a saddle or a flat direction
    still goes uphill; at most `_MAX_STEP` long) and `_LINE_STEPS` points uphill along each axis,
    1e-3 to `_MAX_STEP` away (to cross the family's flat regions, r -> 0 and r -> inf, where the
    Hessian is lost in rounding); it moves to the best of them when that is higher. A search ends
    when a round gains no more than rounding (`_SCORE_NOISE`) and its Newton step is shorter than
    `REFINE_TOLERANCE` (after a failed round the next step is shortened 16-fold). Returns log tau,
    log r and the score (B,) of each."""
    low = np.array([family.log_tau_range[0], math.log(RATIO_MIN)])
    high = np.array([family.log_tau_range[1], math.log(RATIO_MAX)])
    x = np.clip(np.stack([log_tau, log_ratio], axis=1), low, high)  # (B, 2)
    score = np.einsum("bd,bd->b", unit_rows(family(x[:, 0], np.exp(x[:, 1]))), targets)
    radius, h = np.full(len(x), _MAX_STEP), _STENCIL
    offsets = h * np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)  # (9, 2)
    alphas = 0.5 ** np.arange(_LINE_STEPS)
    reach = _MAX_STEP * np.geomspace(1e-3 / _MAX_STEP, 1.0, _LINE_STEPS)
    active = np.arange(len(x))
    for _ in range(_MAX_ROUNDS):
        if not active.size:
            break
        a = np.arange(active.size)
        centre = np.clip(x[active], low + h, high - h)  # (A, 2): the stencil fits in the range
        stencil = centre[:, None, :] + offsets  # (A, 9, 2)
        fs = _score_points(family, stencil, targets[active]).reshape(-1, 3, 3)
        gradient = np.stack([fs[:, 2, 1] - fs[:, 0, 1], fs[:, 1, 2] - fs[:, 1, 0]], axis=1) / (2 * h)
        hessian = np.empty((active.size, 2, 2))
        hessian[:, 0, 0] = fs[:, 2, 1] - 2 * fs[:, 1, 1] + fs[:, 0, 1]
        hessian[:, 1, 1] = fs[:, 1, 2] - 2 * fs[:, 1, 1] + fs[:, 1, 0]
        hessian[:, 0, 1] = hessian[:, 1, 0] = (fs[:, 2, 2] - fs[:, 2, 0] - fs[:, 0, 2] + fs[:, 0, 0]) / 4
        values, vectors = np.linalg.eigh(hessian / h**2)
        step = np.einsum("aij,aj->ai", vectors, np.einsum("aji,aj->ai", vectors, gradient) / np.maximum(np.abs(values), 1e-10))
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, radius[active, None] / np.where(length > 0, length, 1.0))
        # uphill along each axis alone, 1e-3 to _MAX_STEP: (A, 2 axes, L, 2) -> (A, 2L, 2)
        axes = np.sign(gradient)[:, :, None, None] * np.eye(2)[None, :, None, :] * reach[None, None, :, None]
        line = np.concatenate([alphas[:, None] * step[:, None, :], axes.reshape(-1, 2 * _LINE_STEPS, 2)], axis=1)
        line = np.clip(centre[:, None, :] + line, low, high)  # (A, 3L, 2)
        points = np.concatenate([stencil, line], axis=1)  # (A, 9 + 2L, 2)
        scores = np.concatenate([fs.reshape(-1, 9), _score_points(family, line, targets[active])], axis=1)
        k = np.argmax(scores, axis=1)
        gain = scores[a, k] - score[active]
        x[active], score[active] = np.where((gain > 0)[:, None], points[a, k], x[active]), np.maximum(scores[a, k], score[active])
        # No gain beyond rounding: converged when the Newton step is below the tolerance, else
        # try a shorter one.
        progress = gain > _SCORE_NOISE
        newton = np.linalg.norm(step, axis=1)
        radius[active] = np.where(progress, _MAX_STEP, np.minimum(radius[active], newton) / 16)
        active = active[progress | ((newton >= REFINE_TOLERANCE) & (radius[active] >= REFINE_TOLERANCE))]
    return x[:, 0], x[:, 1], score


def _score_points(family: Family, points: NDArray[np.float64], targets: NDArray[np.float64]) -> NDArray[np.float64]:
    """Correlations (A, P) of the raw family at points (A, P, 2) of (log tau, log r) with the unit
    target rows (A, d) of their searches."""
    rows, inverse = _centred(family(points[..., 0].ravel(), np.exp(points[..., 1].ravel())).reshape(*points.shape[:2], -1))
    return np.einsum("apd,ad->ap", rows, targets) * inverse

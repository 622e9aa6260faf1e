"""Fit the linear-CNN formula to a measured energy profile.

The family is the theory module's lambdified profile (no second copy of the formula here):

* one parameter, gradient flow: e(mu; tau) = (1 - exp(-tau mu)) / sqrt(mu)  (default);
* one parameter, discrete steps at a given lr: e(mu; lr, t) = (1 - (1 - lr mu)^t) / sqrt(mu);
* two parameters, raw (not init-subtracted) weights: sqrt(g^2 / mu + r^2).

Similarity is Pearson correlation (PAPER Sec. 1), which ignores the formula's free constant.
The search is global over log tau: a dense grid over the whole range where the normalised family
changes shape (from the early regime tau*max(mu) = 1e-4, where it is sqrt(mu), to the whitened
regime tau*min(mu) = 1e4, where it is 1/sqrt(mu)), then a refinement of the best local maxima of
the grid. Outside that range the normalised family is constant, so the search covers every
profile the family can produce.

The search, vectorised (the formula evaluated for whole vectors of tau at once, all candidates
scored by one matrix product, many profiles fitted together), is `linearcnn._fit_search`.

A best fit can still be no fit: when the optimum sits at an end of the search range (the data
want a tau, or an init ratio r, beyond it, so the parameter is not identified), or when the
fitted profile is flat, so that Pearson's free offset, which the formula does not have, carries
the correlation. `FitResult.at_bound`, `FitResult.degenerate` and `FitResult.warnings` say so; a
correlation so flagged is not evidence of agreement. The thresholds are the constants below.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from linearcnn._fit_search import (  # the search ranges are the search module's; named here too
    EARLY_X,
    RATIO_MAX,
    RATIO_MIN,  # noqa: F401
    WHITE_X,
    Family,
    optimum,
)
from linearcnn.energy import pearson
from linearcnn.errors import LinearCNNInputError

GRID_POINTS = 384
BOOTSTRAP_GRID_POINTS = 128  # the grid of each bootstrap resample's fit

# Honesty thresholds (see `FitResult`).
BOUND_TOLERANCE = 1e-3     # |log(parameter) - log(end of its search range)| within this: at the end
BOUND_SCORE_TOLERANCE = 1e-10  # an end's correlation within this of the optimum's: no better than the end
DEGENERATE_SPREAD = 1e-6   # max/min - 1 of a profile below this: numerically constant
FLAT_FRACTION = 1e-2       # fitted contrast below this fraction of the measured contrast: a flat fit


@dataclass
class FitResult:
    """The best member of the formula's family for one measured profile, and whether it is a fit.

    `at_bound` is True when the optimum is an end of the search range rather than an optimum:
    (i) log tau lies within `BOUND_TOLERANCE` of an end of `search_range["tau"]`, or
    (ii) the family member at an end of the tau range correlates with the profile within
    `BOUND_SCORE_TOLERANCE` of the optimum (the family is flat there, e.g. float64 cannot tell
    tau * min(mu) = 40 from 1e4, so such an optimum is the end in disguise), or
    (iii) raw families: log r lies within `BOUND_TOLERANCE` of log `RATIO_MAX`. The lower end of r
    is not flagged: r = 0 (the one-parameter family, no init term) is the edge of the parameter's
    domain, a genuine constrained optimum, not an artificial limit.

    `degenerate` is True when the fitted shape carries no information:
    (i) the fitted or the measured profile is numerically constant, max/min - 1 below
    `DEGENERATE_SPREAD`; or (ii) the fitted profile's contrast (max - min) / max is below
    `FLAT_FRACTION` times the measured profile's: the formula (free only in scale) predicts a
    nearly flat profile, and the correlation rests on Pearson's free offset, which the formula
    does not have; or (iii) raw families: r reaches `RATIO_MAX` (also `at_bound`): the optimum is
    the r -> inf limit, where r is so large relative to the profile scale that the fitted profile
    is a constant plus a vanishing ripple; or (iv) when bootstrap intervals were computed
    (`fit_filters`, `check_intervals`), the point estimate of tau (or r) lies outside its own
    95% interval.

    `warnings` holds one sentence per finding, naming the value and the bound or threshold.
    """

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
    search_range: dict[str, list[float]] = field(default_factory=dict)  # "tau" (and "init_ratio"): [low, high]
    at_bound: bool = False
    degenerate: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def caveat(self) -> str:
        """'' for an honest fit, else a short note to print next to the correlation."""
        found = [name for name, flag in (("at search bound", self.at_bound), ("degenerate", self.degenerate)) if flag]
        return f"not agreement: {' and '.join(found)}" if found else ""

    def to_dict(self) -> dict[str, Any]:
        """Every field, arrays as lists (JSON-ready)."""
        out = asdict(self)
        for key in ("profile", "fitted_profile", "eigenvalues"):
            out[key] = np.asarray(out[key]).tolist()
        return out

    def __repr__(self) -> str:
        """One line: family, correlation (with its interval), tau, components, and any caveat."""
        band = self.interval.get("correlation")
        text = f"FitResult({self.family}: correlation {self.correlation:.3f}"
        text += f" [{band[0]:.3f}, {band[1]:.3f}]" if band else ""
        text += f", tau {self.tau:.4g}" + ("" if self.init_ratio is None else f", init ratio {self.init_ratio:.3g}")
        return text + f", {len(self.profile)} components" + (f"; {self.caveat}" if self.caveat else "") + ")"

    def to_frame(self) -> Any:
        """One row per patch-PCA component (eigenvalue, measured and fitted profile, max-normalised)
        as a pandas DataFrame; the scalars are in `.attrs`. Needs pandas (not a dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise LinearCNNInputError("FitResult.to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame({"eigenvalue": self.eigenvalues, "profile": self.profile, "fitted_profile": self.fitted_profile})
        frame.index.name = "component"
        frame.attrs = {k: v for k, v in self.to_dict().items() if k not in ("profile", "fitted_profile", "eigenvalues")}
        return frame

    def plot(self, ax: Any = None, *, label: str = "network") -> Any:
        """Draw the measured profile against the fitted formula on `ax` (a new stand-alone Figure's
        Axes when None; pyplot and the backend are left alone) and return the Axes."""
        from linearcnn.plots import draw_fit

        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(6.4, 4.0)).subplots()
        return draw_fit(ax, self.profile, self.fitted_profile, self.correlation, label=label, eigenvalues=self.eigenvalues,
                        interval=self.interval.get("correlation"))


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
        grid_points: points of the global log-tau grid before refinement (at least 3).

    Returns:
        FitResult with Pearson and Spearman correlations, tau (and steps), the normalised
        profile and fitted formula, the number of formula evaluations used, the search range,
        and the `at_bound` / `degenerate` flags with their warnings (criteria in `FitResult`).
    """
    p, mu = _check_inputs(profile, eigenvalues)
    family = Family(mu, lr, raw)
    lo, hi = family.log_tau_range
    log_taus, ratios = optimum(family, p[None, :], grid_points)
    best_log_tau, best_ratio = float(log_taus[0]), None if ratios is None else float(ratios[0])
    fitted = family(log_taus, ratios)[0]
    tau = math.exp(best_log_tau)
    # The family at both ends of the tau range, at the fitted r: does the optimum beat them?
    ends = family(np.array([lo, hi]), None if ratios is None else np.full(2, best_ratio))
    scores = pearson(np.vstack([fitted, ends]), p, undefined=0.0)  # (3,): the fit, then both ends, in one call
    correlation, end_scores = float(scores[0]), scores[1:]
    spearman = float(pearson(_ranks(fitted), _ranks(p))) if np.ptp(fitted) > 0 else 0.0
    family_name = ("raw_" if raw else "") + ("steps" if lr is not None else "gradient_flow")
    search_range = {"tau": [math.exp(lo), math.exp(hi)]}
    if raw:
        search_range["init_ratio"] = [0.0, RATIO_MAX]
    at_bound, degenerate, notes = _assess(
        p, fitted, correlation=correlation, log_tau=best_log_tau, ratio=best_ratio, tau_range=(lo, hi),
        end_scores=(float(end_scores[0]), float(end_scores[1])),
    )
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
        evaluations=family.evaluations,
        search_range=search_range,
        at_bound=at_bound,
        degenerate=degenerate,
        warnings=notes,
    )


def _ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, ties given their average rank (Spearman's correlation is Pearson's of these)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def _relative_spread(values: NDArray[np.float64]) -> float:
    """max/min - 1 of a profile (inf when its minimum is <= 0)."""
    low, high = float(np.min(values)), float(np.max(values))
    return high / low - 1 if low > 0 else math.inf


def _contrast(values: NDArray[np.float64]) -> float:
    """(max - min) / max|values|, in [0, 2]; 0 for an all-zero profile."""
    peak = float(np.max(np.abs(values)))
    return float(np.ptp(values)) / peak if peak > 0 else 0.0


def _assess(
    profile: NDArray[np.float64], fitted: NDArray[np.float64], *, correlation: float, log_tau: float,
    ratio: float | None, tau_range: tuple[float, float], end_scores: tuple[float, float],
) -> tuple[bool, bool, list[str]]:
    """`FitResult.at_bound`, `.degenerate` and `.warnings` of a fit (criteria in `FitResult`)."""
    lo, hi = tau_range
    tau, notes = math.exp(log_tau), []
    at_bound = degenerate = False
    range_text = f"[{math.exp(lo):.4g}, {math.exp(hi):.4g}]"
    ends = (
        ("lower", lo, end_scores[0], f"tau * max eigenvalue = {EARLY_X:g}, where the family is already sqrt(mu)", "below"),
        ("upper", hi, end_scores[1], f"tau * min eigenvalue = {WHITE_X:g}, the whitening limit 1/sqrt(mu)", "above"),
    )
    for name, end, end_score, meaning, side in ends:
        if abs(log_tau - end) <= BOUND_TOLERANCE:
            at_bound = True
            notes.append(f"fitted tau = {tau:.4g} is at the {name} end of the search range {range_text} ({meaning}): "
                         f"the best fit lies {side} the range, so tau is not identified")
        elif end_score >= correlation - BOUND_SCORE_TOLERANCE:
            at_bound = True
            notes.append(f"fitted tau = {tau:.4g} fits no better than the {name} end of the search range {range_text} "
                         f"({meaning}; correlation there {end_score:.10f}, within {BOUND_SCORE_TOLERANCE:g}): "
                         f"tau is not identified")
    if ratio is not None and ratio > 0 and math.log(RATIO_MAX) - math.log(ratio) <= BOUND_TOLERANCE:
        at_bound = degenerate = True
        notes.append(f"fitted init ratio r = {ratio:.4g} is at the upper end of its search range [0, {RATIO_MAX:g}]: "
                     "the best fit is the r -> inf limit, a constant profile plus a vanishing ripple, so r is not "
                     f"identified and the correlation {correlation:.4f} rests on Pearson's free offset")
    ratio_text = f" (init ratio r = {ratio:.4g})" if ratio is not None else ""
    for what, values in (("fitted", fitted), ("measured", profile)):
        spread = _relative_spread(values)
        if spread < DEGENERATE_SPREAD:
            degenerate = True
            notes.append(f"the {what} profile is constant to max/min - 1 = {spread:.3g}, below {DEGENERATE_SPREAD:g}"
                         f"{ratio_text if what == 'fitted' else ''}: its correlation {correlation:.4f} measures "
                         "rounding, not the formula's shape")
    fitted_contrast, measured_contrast = _contrast(fitted), _contrast(profile)
    if not degenerate and fitted_contrast < FLAT_FRACTION * measured_contrast:
        degenerate = True
        notes.append(f"the fitted profile varies by {fitted_contrast:.3g} of its maximum{ratio_text}, less than "
                     f"{FLAT_FRACTION:g} x the measured profile's {measured_contrast:.3g}: the correlation "
                     f"{correlation:.4f} rests on Pearson's free offset, which the formula does not have")
    return at_bound, degenerate, notes


def check_intervals(result: FitResult) -> None:
    """Flag `result` degenerate when its tau (or init ratio) lies outside its own bootstrap 95%
    interval (`result.interval`, from `fit_filters`), with a warning naming value and interval."""
    for key, value in (("tau", result.tau), ("init_ratio", result.init_ratio)):
        bounds = result.interval.get(key)
        if value is None or not bounds:
            continue
        low, high = bounds
        if not low <= value <= high:
            result.degenerate = True
            result.warnings.append(
                f"fitted {key.replace('_', ' ')} = {value:.4g} lies outside its own bootstrap 95% interval "
                f"[{low:.4g}, {high:.4g}]: the resampled fits land elsewhere, so the point estimate is not a stable optimum"
            )


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
    profile and the fit, and reports percentile intervals for the correlation and tau (and the
    init ratio r for raw families); a point estimate outside its own interval marks the result
    `degenerate` (`check_intervals`). The resamples are fitted together (`BOOTSTRAP_GRID_POINTS`),
    each exactly as `fit_formula(profile, eigenvalues, grid_points=BOOTSTRAP_GRID_POINTS)` fits it.
    """
    from linearcnn.energy import energy_profile

    w = np.asarray(weights, dtype=np.float64)
    w = w.reshape(w.shape[0], -1)  # (K, d)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak > 0 and np.isfinite(peak):
        w = w / peak  # the profile's shape, all a fit sees, is scale-free: keep the squares inside float64
    result = fit_formula(energy_profile(w, eigenvectors), eigenvalues, lr=lr, raw=raw)
    if bootstrap > 0 and w.shape[0] > 1:
        profiles = _bootstrap_profiles(w, eigenvectors, bootstrap, seed)
        profiles = profiles[np.ptp(profiles, axis=1) > 0]  # a constant profile has no fit
        if len(profiles):
            family = Family(result.eigenvalues, lr, raw)
            log_taus, ratios = optimum(family, profiles, BOOTSTRAP_GRID_POINTS)
            correlations = pearson(family(log_taus, ratios), profiles, undefined=0.0)
            result.interval = {
                "correlation": np.percentile(correlations, [2.5, 97.5]).tolist(),
                "tau": np.percentile(np.exp(log_taus), [2.5, 97.5]).tolist(),
                "samples": [len(correlations)],
            }
            if ratios is not None:
                result.interval["init_ratio"] = np.percentile(ratios, [2.5, 97.5]).tolist()
            check_intervals(result)
    return result


def _bootstrap_profiles(w: NDArray[np.float64], eigenvectors: ArrayLike, resamples: int, seed: int) -> NDArray[np.float64]:
    """Energy profiles (B, d) of `resamples` resamples with replacement of the filters `w` (K, d).

    The draws are those of one `rng.integers(0, K, size=K)` per resample. Each profile is
    `energy_profile`'s e_i = sqrt(mean_k (w_k . u_i)^2) over the resampled filters, all at once:
    the multiplicities of the filters in each resample (B, K) times their squared projections (K, d)."""
    rng = np.random.default_rng(seed)
    k = w.shape[0]
    counts = np.stack([np.bincount(rng.integers(0, k, size=k), minlength=k) for _ in range(resamples)])  # (B, K)
    squares = (w @ np.asarray(getattr(eigenvectors, "eigenvectors", eigenvectors), dtype=np.float64)) ** 2  # (K, d)
    return np.sqrt(counts @ squares / k)

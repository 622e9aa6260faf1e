"""The few measurements the validation needs that the package does not provide, and the helpers
every experiment shares (both views of a trained layer, similarity over seed pairs, fit summaries).

Everything else (energy profiles, similarity, fits, whitening indicators, exact dynamics) is
called from `linearcnn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

from linearcnn.energy import energy_profile, profile_similarity
from validation.runs import Context, Trained


def mean_std(values: Sequence[float | None] | NDArray[np.float64]) -> dict[str, Any]:
    """{"mean", "std" (population, over the values), "n", "values"}; NaNs are left out of mean/std."""
    array = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "n": int(finite.size),
        "values": [None if not np.isfinite(v) else float(v) for v in array],
    }


def series(x: ArrayLike, values: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """{"x", "mean", "std"}: mean and (population) std over axis 0 (seeds) of values (seeds, points),
    against x; missing values (None, NaN) are left out."""
    array = np.asarray(values, dtype=float)
    return {"x": np.asarray(x, dtype=float), "mean": np.nanmean(array, axis=0), "std": np.nanstd(array, axis=0)}


def output_autocorrelation(filters: np.ndarray, images: np.ndarray, lags: Sequence[int]) -> list[float]:
    """Normalised spatial autocorrelation of a filter bank's output, summed over filters.

    With o_k = w_k * x (valid convolution of the normalised images), returns for each lag L
    R(L) / R(0), R(L) = mean over images, filters and positions of o_k(p) o_k(p + L), averaged
    over a horizontal and a vertical shift by L. A whitening bank (sum_k |W_k(f)|^2 ~ 1 / power
    spectrum, PAPER.md section 3) makes the summed output white: R(L) / R(0) -> 0 for L > 0.
    filters (K, C, k, k), images (N, C, H, W).
    """
    w = torch.as_tensor(filters, dtype=torch.float64)  # (K, C, k, k)
    x = torch.as_tensor(images, dtype=torch.float64)  # (N, C, H, W)
    out = F.conv2d(x, w)  # (N, K, H', W')
    r0 = float((out * out).mean())
    values = []
    for lag in lags:
        horizontal = (out[..., :, :-lag] * out[..., :, lag:]).mean()
        vertical = (out[..., :-lag, :] * out[..., lag:, :]).mean()
        values.append(float(0.5 * (horizontal + vertical)) / r0 if r0 > 0 else float("nan"))
    return values


def input_autocorrelation(images: np.ndarray, lags: Sequence[int]) -> list[float]:
    """The same autocorrelation for the images themselves (the identity filter), for reference."""
    x = torch.as_tensor(images, dtype=torch.float64)  # (N, C, H, W)
    channels = x.shape[1]
    identity = torch.zeros(channels, channels, 1, 1, dtype=torch.float64)
    identity[range(channels), range(channels)] = 1.0
    return output_autocorrelation(identity.numpy(), x.numpy(), lags)


def profiles(ctx: Context, run: Trained) -> dict[str, np.ndarray]:
    """Init-subtracted, raw and initial energy profiles of one trained first layer, each (d,), in the
    patch-PCA basis of the images it trained on (`Context.stats_for`)."""
    u = ctx.stats_for(run.arm).eigenvectors
    return {
        "sub": energy_profile(run.final, u, initial=run.initial),
        "raw": energy_profile(run.final, u),
        "init": energy_profile(run.initial, u),
    }


def pair_stats(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    return mean_std([profile_similarity(a, b) for a, b in pairs])


def both_views(ctx: Context, runs_a: list[Trained], runs_b: list[Trained] | None, *, against_init: bool = False,
                all_pairs: bool = False) -> dict[str, Any]:
    """Similarity in both views. runs_b None: pairs within runs_a (all seed pairs);
    against_init: each run against its own initial layer; otherwise matched seeds (or all pairs).
    Comparisons of two runs also give "init_only": the similarity of their two initial layers
    alone, which the raw view approaches when the layers barely move (matched seeds share W0)."""
    pa = [profiles(ctx, r) for r in runs_a]
    arms = arms_of(runs_a + (runs_b or []))
    if against_init:
        return {"init_subtracted": pair_stats([(p["sub"], p["init"]) for p in pa]),
                "raw": pair_stats([(p["raw"], p["init"]) for p in pa]), "arms": arms}
    if runs_b is None:
        index_pairs = list(combinations(range(len(pa)), 2))
        pb = pa
    else:
        pb = [profiles(ctx, r) for r in runs_b]
        index_pairs = [(i, j) for i in range(len(pa)) for j in range(len(pb))] if all_pairs else list(zip(range(len(pa)), range(len(pb))))
    out: dict[str, Any] = {view: pair_stats([(pa[i][key], pb[j][key]) for i, j in index_pairs])
                           for view, key in (("init_subtracted", "sub"), ("raw", "raw"), ("init_only", "init"))}
    out["arms"] = arms
    return out


def arms_of(runs: list[Trained]) -> list[str]:
    """The arm keys behind a measurement (the report looks up whether their runs converged)."""
    return sorted({r.arm.key for r in runs})


def flagged(fit: Any) -> bool:
    """A fit at the bound of its search or degenerate (flags of `FitResult`, where it has them) is no agreement."""
    return bool(getattr(fit, "at_bound", False)) or bool(getattr(fit, "degenerate", False))


def fit_stats(fits: list[Any]) -> dict[str, Any]:
    """Mean +- std over the fits that are not flagged (`flagged`); the flagged ones are counted apart.
    Bootstrap 95% intervals over filters, where the fits have them, per seed and their mean."""
    valid = [f for f in fits if not flagged(f)]
    out: dict[str, Any] = {"correlation": mean_std([f.correlation for f in valid]), "tau": mean_std([f.tau for f in valid]),
           "spearman": mean_std([f.spearman for f in valid]), "fits": len(fits), "flagged": len(fits) - len(valid)}
    intervals = [f.interval["correlation"] for f in valid if f.interval.get("correlation")]
    if intervals:
        out["correlation"]["interval"] = np.mean(intervals, axis=0).tolist()
        out["correlation"]["intervals"] = intervals
    return out


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(np.log(x[keep])) == 0:
        return None
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])

"""The derived profiles evaluated for given numbers: what `linearcnn derive -e ...` shows.

    table = profile_table([4.0, 1.0, 0.25], lr=0.1, steps=[1, 10, 100])
    table.profiles          # (3 steps, 3 eigenvalues), each max-normalised
    table.whitening_limit   # (3,) the steps -> inf limit 1/sqrt(mu), max-normalised

One function chooses the form (Thm 4.2 at `lr` and `steps`, or gradient flow at `tau`; raw
weights when `init_ratio` r > 0) so the CLI only formats the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from linearcnn.errors import LinearCNNInputError
from linearcnn.theory.numeric import (
    formula_profile,
    gradient_flow_profile,
    raw_formula_profile,
    raw_gradient_flow_profile,
    whitening_profile,
)


@dataclass(frozen=True)
class ProfileTable:
    """Profiles of the derived formula for sorted eigenvalues at several steps (or times)."""

    eigenvalues: NDArray[np.float64]  # (d,) descending
    parameter: str  # "steps" or "tau"
    values: list[float]  # (P,) the steps or gradient-flow times
    lr: float | None  # None for gradient flow
    init_ratio: float  # r = sigma / s; 0 for the init-subtracted profile
    normalized: bool
    profiles: NDArray[np.float64]  # (P, d)
    whitening_limit: NDArray[np.float64]  # (d,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "lr": self.lr,
            self.parameter: self.values,
            "init_ratio": self.init_ratio,
            "normalized": self.normalized,
            "profiles": self.profiles.tolist(),
            "whitening_limit": self.whitening_limit.tolist(),
        }


def _max_normalized(profiles: NDArray[np.float64]) -> NDArray[np.float64]:
    peak = profiles.max(axis=-1, keepdims=True)
    return np.divide(profiles, peak, out=np.zeros_like(profiles), where=peak > 0)


def profile_table(
    eigenvalues: ArrayLike,
    *,
    lr: float | None = None,
    steps: Sequence[float] | None = None,
    tau: Sequence[float] | None = None,
    init_ratio: float = 0.0,
    normalize: bool = True,
) -> ProfileTable:
    """The derived profile for `eigenvalues` (any order; sorted descending) at `lr` and `steps`, or at
    gradient-flow times `tau`; raw weights when `init_ratio` > 0.

    >>> table = profile_table([1.0, 4.0], tau=[1e9])
    >>> table.eigenvalues.tolist(), table.profiles.round(6).tolist()
    ([4.0, 1.0], [[0.5, 1.0]])
    """
    if not (isinstance(init_ratio, (int, float)) and math.isfinite(init_ratio) and init_ratio >= 0):
        raise LinearCNNInputError(
            f"init_ratio must be a finite number >= 0 (0: the init-subtracted profile), got {init_ratio}", parameter="init_ratio"
        )
    if (tau is None) == (steps is None):
        raise LinearCNNInputError("give either steps (with lr) or tau, not both or neither", parameter="tau")
    mu = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]  # (d,)
    if tau is not None:
        values, parameter = [float(t) for t in tau], "tau"
        times = np.asarray(values)
        profiles = raw_gradient_flow_profile(mu, times, init_ratio) if init_ratio > 0 else gradient_flow_profile(mu, times)
        used_lr = None
    else:
        if lr is None:
            raise LinearCNNInputError("steps need a learning rate lr", parameter="lr")
        values, parameter = [float(s) for s in steps], "steps"  # type: ignore[union-attr]
        counts = np.asarray(values)
        profiles = raw_formula_profile(mu, lr, counts, init_ratio) if init_ratio > 0 else formula_profile(mu, lr, counts)
        used_lr = float(lr)
    profiles = np.asarray(profiles, dtype=np.float64).reshape(len(values), mu.size)  # (P, d)
    if not np.all(np.isfinite(profiles)):  # r^2 overflows float64 beyond about 1e154
        raise LinearCNNInputError(
            f"init_ratio {init_ratio:g} is too large: the raw profile sqrt(g^2/mu + r^2) overflows float64; "
            "expected a value below 1e150 (beyond about 1e8 the raw profile is the constant r to double precision)",
            parameter="init_ratio",
        )
    whitening = np.asarray(whitening_profile(mu), dtype=np.float64)  # (d,)
    if normalize:
        profiles = _max_normalized(profiles)
        whitening = _max_normalized(whitening[None])[0]
    return ProfileTable(mu, parameter, values, used_lr, float(init_ratio), normalize, profiles, whitening)


__all__ = ["ProfileTable", "profile_table"]

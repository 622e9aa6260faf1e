"""The linear CNN's exact dynamics, measured like a trained network.

`linearcnn.dynamics` gives the filters at any step in closed form; this module measures them:
per step, the energy profile of the change W(t) - W(0), its formula fit, the theory's prediction
at that step, whitening indicators and the raw-weight fit (`simulation_report`). `run_simulation`
is the whole pipeline behind `linearcnn simulate`: the data, targets and initial filters exactly
as `linearcnn train --arch linear` builds them, the moment pass, the patch statistics, the
assumption diagnostics and the per-step report. The validation suite calls the same functions.

The theory's prediction (PAPER Sec. 2-3): if A = C / J (assumption (a); C the patch second
moment, J the number of patch locations), the mean-filter recursion runs at step eta = 2 lr / K
on A, i.e. at `lr_patch = eta / J` on the patch eigenvalues mu, and the init-subtracted profile
after t steps is the formula (1 - (1 - lr_patch mu)^t) / sqrt(mu); its gradient-flow time is
`Simulation.theory_tau()` = eta t / J.

    >>> import numpy as np
    >>> mu = np.array([4.0, 1.0, 0.25])
    >>> theory_profile(mu, lr_patch=0.01, step=10).round(4).tolist()  # ~ lr t sqrt(mu) early on
    [0.1676, 0.0956, 0.0494]
    >>> theory_profile(mu, lr_patch=1.0, step=10).round(4).tolist()   # lr * max(mu) >= 2: gradient flow
    [0.5, 1.0, 1.8358]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.dynamics import AssumptionDiagnostics, Simulation
    from linearcnn.fit import FitResult
    from linearcnn.patches import PatchStats
    from linearcnn.train import TrainConfig

__all__ = [
    "SimulationRun",
    "StepReport",
    "run_simulation",
    "simulation_report",
    "theory_profile",
]


def theory_profile(eigenvalues: ArrayLike, *, lr_patch: float, step: float) -> NDArray[np.float64]:
    """The init-subtracted energy profile the theory predicts after `step` GD steps, (d,).

    `lr_patch` is the step on the patch eigenvalues (eta / J for the linear CNN, module docstring).
    The discrete formula (Thm 4.2) while it is stable, lr_patch * max(mu) < 2; beyond, the
    gradient-flow profile at tau = lr_patch * step (the formula has no stable meaning there).
    A zero eigenvalue (rank-deficient statistics: fewer patches than patch dimensions) gets the
    formula's limit mu -> 0, which is 0 (both profiles go as lr t sqrt(mu)): no data moves the
    filters along a direction in which no patch varies.

    >>> theory_profile(np.array([4.0, 1.0, 0.0]), lr_patch=0.01, step=10).round(4).tolist()
    [0.1676, 0.0956, 0.0]
    """
    from linearcnn import theory

    mu = np.asarray(eigenvalues, dtype=np.float64)
    if mu.ndim != 1 or not np.all(np.isfinite(mu)) or not np.any(mu > 0):
        raise LinearCNNInputError(
            f"patch eigenvalues {np.array2string(mu, threshold=6)}: expected finite values, at least one positive "
            "(the data set's patches do not vary)"
        )
    moving = mu > 0
    profile = np.zeros_like(mu)  # (d,) the mu -> 0 limit where mu == 0
    if lr_patch * float(mu.max()) < 2:
        profile[moving] = theory.formula_profile(mu[moving], lr_patch, step)
    else:
        profile[moving] = theory.gradient_flow_profile(mu[moving], lr_patch * step)
    return profile


@dataclass
class StepReport:
    """One step of the exact dynamics, measured. None where a measure is undefined (step 0, or
    filters that have not moved); the raw-weight fields are None when not asked for. A fit
    flagged `at_bound` or `degenerate` (`linearcnn.fit.FitResult`) is no evidence of agreement,
    whatever its correlation; `warnings` says why, one sentence each."""

    step: int
    theory_tau: float                       # eta t / J (`Simulation.theory_tau`)
    fit_correlation: float | None           # best formula fit to the init-subtracted profile
    fit_tau: float | None
    theory_correlation: float | None        # correlation with `theory_profile` at this step
    whitening: dict[str, float] | None      # `whitening_indicators` of W(t) - W(0)
    raw_fit_correlation: float | None       # two-parameter fit to the raw-weight profile
    raw_spectral_flatness: float | None     # of the raw weights W(t)
    profile: NDArray[np.float64]            # (d,) energy profile of W(t) - W(0)
    raw_profile: NDArray[np.float64] | None  # (d,) energy profile of W(t)
    at_bound: bool = False                  # `FitResult.at_bound` of the init-subtracted fit
    degenerate: bool = False                # `FitResult.degenerate` of the init-subtracted fit
    raw_at_bound: bool = False              # the same for the raw-weight fit
    raw_degenerate: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)  # both fits' warnings, each naming its fit

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _step_report(
    step: int, theory_tau: float, weights: NDArray[np.float64], initial: NDArray[np.float64], stats: PatchStats,
    lr_patch: float, raw: bool,
) -> StepReport:
    from linearcnn.energy import energy_profile, profile_similarity, whitening_indicators
    from linearcnn.fit import fit_formula

    mu = stats.eigenvalues
    delta = weights - initial  # (K, C, k, k) init subtracted
    profile = energy_profile(delta, stats.eigenvectors)  # (d,)
    fit_correlation = fit_tau = theory_correlation = whitening = None
    fitted: FitResult | None = None
    if step != 0 and np.ptp(profile) > 0:
        fitted = fit_formula(profile, mu)
        fit_correlation, fit_tau = fitted.correlation, fitted.tau
        theory_correlation = profile_similarity(profile, theory_profile(mu, lr_patch=lr_patch, step=step))
        whitening = whitening_indicators(delta, stats)
    raw_profile = raw_fit_correlation = raw_flatness = None
    raw_fitted: FitResult | None = None
    if raw:
        raw_profile = energy_profile(weights, stats.eigenvectors)  # (d,)
        if np.ptp(raw_profile) > 0:
            raw_fitted = fit_formula(raw_profile, mu, raw=True)
            raw_fit_correlation = raw_fitted.correlation
            raw_flatness = whitening_indicators(weights, stats)["spectral_flatness"]
    notes = [f"step {step}, {name} fit: {note}" for name, result in (("init-subtracted", fitted), ("raw", raw_fitted))
             if result is not None for note in result.warnings]
    return StepReport(
        step=int(step), theory_tau=float(theory_tau), fit_correlation=fit_correlation, fit_tau=fit_tau,
        theory_correlation=theory_correlation, whitening=whitening, raw_fit_correlation=raw_fit_correlation,
        raw_spectral_flatness=raw_flatness, profile=profile, raw_profile=raw_profile,
        at_bound=bool(fitted and fitted.at_bound), degenerate=bool(fitted and fitted.degenerate),
        raw_at_bound=bool(raw_fitted and raw_fitted.at_bound), raw_degenerate=bool(raw_fitted and raw_fitted.degenerate),
        warnings=notes,
    )


def simulation_report(sim: Simulation, stats: PatchStats, *, raw: bool = True) -> list[StepReport]:
    """A `StepReport` for every step of `sim` (`linearcnn.dynamics.simulate`), against `stats`.

    raw: also fit the raw-weight profile (a two-parameter fit per step; the validation suite,
    which does not use it, leaves it out).
    """
    taus = sim.theory_tau()  # (S,) eta t / J
    lr_patch = sim.eta / sim.num_locations  # the step on the patch eigenvalues if A = C / J
    return [
        _step_report(int(step), float(taus[i]), sim.filters[i], sim.initial_weights, stats, lr_patch, raw)
        for i, step in enumerate(sim.steps)
    ]


@dataclass
class SimulationRun:
    """Everything `run_simulation` computed."""

    sim: Simulation
    stats: PatchStats
    diagnostics: AssumptionDiagnostics
    steps: list[StepReport]
    data_info: dict[str, Any]  # the training data's description (`prepare_training_data`)

    def save(self, path: str | Path, meta: dict[str, Any]) -> Path:
        """Write the filters at every step, the moments, the patch statistics and the profiles (.npz),
        atomically; `meta` (with the diagnostics' summary added) is stored as JSON."""
        from linearcnn._files import atomic_save
        from linearcnn.records import to_json

        sim, stats = self.sim, self.stats
        arrays: dict[str, Any] = {
            "steps": sim.steps, "filters": sim.filters, "initial_weights": sim.initial_weights, "A": sim.A, "b": sim.b,
            "a_eigenvalues": sim.a_eigenvalues, "patch_eigenvalues": stats.eigenvalues,
            "patch_eigenvectors": stats.eigenvectors, "profiles": np.stack([r.profile for r in self.steps]),
        }
        raw_profiles = [r.raw_profile for r in self.steps if r.raw_profile is not None]
        if raw_profiles:
            arrays["raw_profiles"] = np.stack(raw_profiles)
        arrays["meta"] = np.array(to_json({**meta, "diagnostics": self.diagnostics.summary()}, indent=None))

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a handle, so numpy keeps the temporary name as given
                np.savez(handle, **arrays)

        return atomic_save(path, write)


def _initial_filters(config: TrainConfig, channels: int) -> NDArray[np.float64]:
    """The linear model's initial filters for `config.seed`, drawn exactly as `linearcnn.train` does."""
    import torch

    from linearcnn.models import build_seeded_model, first_layer

    model = build_seeded_model(
        "linear", channels, 2, seed=config.seed, width=config.width, kernel_size=config.kernel_size, init_std=config.init_std
    )
    return first_layer(model).weight.detach().to(torch.float64).numpy()  # (K, C, k, k)


def _check_rank(stats: PatchStats, data: str) -> None:
    """Refuse patch statistics with fewer than 2 positive eigenvalues (the rule of
    `linearcnn.energy.whitening_indicators`): nothing in them to fit a profile to. Fewer patches
    than dimensions is otherwise fine: the zero eigenvalues get the formula's mu -> 0 limit."""
    mu = np.asarray(stats.eigenvalues, dtype=np.float64)
    positive = int(np.sum(mu > mu.max() * mu.size * np.finfo(np.float64).eps)) if mu.size else 0
    if positive < 2:
        d = stats.channels * stats.kernel_size**2
        raise LinearCNNInputError(
            f"data set {data!r} has too few patches for a simulation: {stats.num_patches} patch(es) of "
            f"{stats.channels}x{stats.kernel_size}x{stats.kernel_size} = {d} values span {positive} direction(s); "
            "expected at least 2 (more or larger images, or a smaller kernel_size)",
            parameter="kernel_size",
        )


def run_simulation(
    config: TrainConfig, steps: Sequence[int], *, centered: bool = False, device: str = "auto", raw: bool = True
) -> SimulationRun:
    """Exact full-batch GD of the linear CNN that `linearcnn.train.train(config)` would train, at `steps`.

    config: an `arch="linear"` TrainConfig (validated and resolved; its data, labels, seed, width,
    kernel_size, init_std, limit and lr are used); steps: step counts; centered: patch PCA of the
    covariance instead of the second moment; device: where the data passes run (results are float64).
    """
    import torch

    from linearcnn.data import load_dataset
    from linearcnn.device import resolve_device
    from linearcnn.dynamics import assumption_diagnostics, simulate
    from linearcnn.patches import dataset_patch_stats
    from linearcnn.train import prepare_training_data

    resolve_device(device)  # a bad device fails before the data are read
    dataset = load_dataset(config.data, limit=config.limit)
    _, channels, height, width = dataset.images.shape
    kernel = int(config.kernel_size or 0)
    if kernel > min(height, width):
        raise LinearCNNInputError(
            f"kernel_size {kernel} is larger than the {height}x{width} images of {config.data!r}", parameter="kernel_size"
        )
    training = prepare_training_data(config, dataset, torch.device("cpu"), torch.float64)
    initial = _initial_filters(config, channels)  # (K, C, k, k) float64
    sim = simulate(training.images, training.targets, initial, config.lr, list(steps), device=device)
    stats = dataset_patch_stats(dataset, kernel, centered=centered, device=device)
    _check_rank(stats, config.data)
    diagnostics = assumption_diagnostics(
        sim.A, sim.b, stats.eigenvalues, stats.eigenvectors, num_locations=sim.num_locations,
        num_images=sim.num_images, target_second_moment=sim.target_second_moment,
    )
    return SimulationRun(sim=sim, stats=stats, diagnostics=diagnostics, steps=simulation_report(sim, stats, raw=raw),
                         data_info=training.info)

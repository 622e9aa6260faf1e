"""Experiment `linear_cnn`: the paper's linear CNN (PAPER.md sections 2-3).

Train it (full batch, float64), check `linearcnn.dynamics.simulate` against the training step for
step, then follow the exact dynamics from step 1 far into the whitening regime, measuring every
step with `linearcnn.simulation_report` (formula fit, theory at that step, whitening) plus what
only this experiment asks: the whitening correlation in A's own eigenbasis and the output
autocorrelation of the filters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from linearcnn import plots
from linearcnn.dynamics import FOLDED_NORMAL_CV
from linearcnn.energy import energy_profile, pearson, whitening_indicators
from linearcnn.fit import fit_formula
from linearcnn.simulation_report import simulation_report
from validation.measures import input_autocorrelation, mean_std, output_autocorrelation, series
from validation.runs import Context

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.data import ImageDataset
    from linearcnn.patches import PatchStats

#: Label draws of the Monte Carlo prediction of the whitening correlation under label noise.
NOISE_DRAWS = 4000

#: The per-step measures averaged over seeds (and drawn).
STEP_KEYS = ("fit_correlation", "fit_tau", "theory_tau", "corr_formula_at_theory_tau",
             "corr_inv_sqrt_patch_eigenvalues", "corr_inv_sqrt_A_eigenvalues")


@dataclasses.dataclass
class _SeedRun:
    agreement: dict[str, float]      # simulate vs training
    rows: list[dict[str, Any]]       # one per trajectory step
    deltas: NDArray[np.float64]      # (P, C, k, k) W(t) - W(0) of one filter (all filters move alike)
    a_matrix: NDArray[np.float64]    # (d, d) A, the mean-patch second moment (the same for every label draw)


def _one_seed(
    ctx: Context, dataset: ImageDataset, stats: PatchStats, images_ac: NDArray[np.float64], labels: str, seed: int
) -> _SeedRun:
    """Train one seed, compare with `simulate`, then measure the closed form along log-spaced steps."""
    import torch

    from linearcnn import dynamics
    from linearcnn.train import TrainConfig, prepare_training_data, train

    c = ctx.config
    base = TrainConfig(arch="linear", data=ctx.data, labels=labels, width=c.linear_filters,
                       kernel_size=c.kernel_size, precision="float64", batch_size=len(dataset.images), seed=seed,
                       device=c.device, limit=c.linear_images).validate().resolved()
    data = prepare_training_data(base, dataset, torch.device("cpu"), torch.float64)
    A, _, _ = dynamics.moment_matrices(data.images, c.kernel_size, data.targets, device=ctx.device)
    a_max = float(dynamics.psd_eigen(A).values[0])
    lr = c.linear_lr_fraction * dynamics.linear_cnn_max_stable_lr(a_max, c.linear_filters)
    config = dataclasses.replace(base, lr=lr, steps=c.linear_train_steps, snapshot_every=max(1, c.linear_train_steps // 10))
    result = train(config, dataset=dataset)
    steps = result.snapshot_steps.numpy()
    w0 = result.initial_first_layer.to(torch.float64).numpy()  # (K, C, k, k)
    trained = result.snapshot_weights.to(torch.float64).numpy()  # (S, K, C, k, k)
    sim = dynamics.simulate(data.images, data.targets, w0, lr, steps, device=ctx.device)
    diff = np.linalg.norm((trained - sim.filters).reshape(len(steps), -1), axis=1)
    change = np.linalg.norm((sim.filters - w0[None]).reshape(len(steps), -1), axis=1)
    size = np.linalg.norm(sim.filters.reshape(len(steps), -1), axis=1)
    moved = change > 0
    agreement = {"max_rel_error_of_change": float(np.max(diff[moved] / change[moved])),
                 "max_rel_error_of_weights": float(np.max(diff / size))}
    # far past training: closed form at log-spaced steps into the whitening regime
    alpha = sim.a_eigenvalues
    positive = alpha > alpha[0] * 1e-12
    t_max = min(1e15, 1e3 / (sim.eta * float(alpha[positive].min())))
    traj_steps = np.unique(np.round(np.logspace(0, math.log10(t_max), c.linear_trajectory_points)))
    filters = dynamics.simulate_filters(w0, sim.A, sim.b, lr, traj_steps,
                                        eigen=dynamics.Eigen(sim.a_eigenvalues, sim.a_eigenvectors))
    along = dataclasses.replace(sim, steps=traj_steps.astype(np.int64), filters=filters)
    rows, deltas = [], []
    for measured, w in zip(simulation_report(along, stats, raw=False), filters):
        delta = w - w0  # (K, C, k, k) identical rows: every filter gets the same gradient
        in_a_basis = energy_profile(delta, sim.a_eigenvectors)
        rows.append({
            "step": float(measured.step), "fit_correlation": measured.fit_correlation, "fit_tau": measured.fit_tau,
            "theory_tau": measured.theory_tau, "corr_formula_at_theory_tau": measured.theory_correlation,
            "corr_inv_sqrt_patch_eigenvalues": (measured.whitening or {}).get("corr_inv_sqrt_eigenvalues"),
            "corr_inv_sqrt_A_eigenvalues": float(pearson(in_a_basis[positive], 1 / np.sqrt(alpha[positive]))),
            "output_autocorrelation": output_autocorrelation(delta[:1], images_ac, c.autocorr_lags),
        })
        deltas.append(delta[0])
    return _SeedRun(agreement=agreement, rows=rows, deltas=np.stack(deltas), a_matrix=np.asarray(sim.A, dtype=np.float64))


def _summary(ctx: Context, runs: list[_SeedRun], stats: PatchStats, images_ac: NDArray[np.float64]) -> dict[str, Any]:
    """Mean +- std over seeds of every per-step measure, and the seeds pooled into one bank."""
    lags = ctx.config.autocorr_lags
    rows_by_seed = [r.rows for r in runs]
    points = range(len(rows_by_seed[0]))
    # seeds pooled: the label draws' filters as one bank, approximating the expectation over draws
    bank = np.stack([r.deltas for r in runs], axis=1)  # (P, seeds, C, k, k)
    pooled = []
    for p in points:
        profile = energy_profile(bank[p], stats.eigenvectors)
        pooled.append({"step": rows_by_seed[0][p]["step"],
                       "corr_inv_sqrt_patch_eigenvalues": whitening_indicators(bank[p], stats)["corr_inv_sqrt_eigenvalues"],
                       "fit_correlation": fit_formula(profile, stats.eigenvalues).correlation,
                       "output_autocorrelation": output_autocorrelation(bank[p], images_ac, lags)})
    along_steps = {k: [mean_std([rows[p][k] for rows in rows_by_seed]) for p in points] for k in STEP_KEYS}
    autocorrelation = {str(lag): [mean_std([rows[p]["output_autocorrelation"][i] for rows in rows_by_seed]) for p in points]
                       for i, lag in enumerate(lags)}
    return {
        "simulate_vs_train": {k: mean_std([r.agreement[k] for r in runs]) for k in runs[0].agreement},
        "steps": [r["step"] for r in rows_by_seed[0]],
        "along_steps": along_steps,
        "output_autocorrelation": autocorrelation,
        "seeds_pooled": pooled,
        "first": {k: along_steps[k][0] for k in STEP_KEYS},
        "last": {k: along_steps[k][-1] for k in STEP_KEYS},
        "best_fit_correlation": mean_std([max(r["fit_correlation"] for r in rows) for rows in rows_by_seed]),
        "last_autocorrelation": {k: v[-1] for k, v in autocorrelation.items()},
        "first_autocorrelation": {k: v[0] for k, v in autocorrelation.items()},
    }


def whitening_under_label_noise(eigenvalues: NDArray[np.float64], pooled: int, *, draws: int = NOISE_DRAWS,
                                seed: int = 0) -> dict[str, Any]:
    """What corr(profile, 1/sqrt(eigenvalue)) the whitening limit itself gives for finitely many label draws.

    In the limit the filters are A^-1 b, with profile |u_i . A^-1 b| = |z_i| / alpha_i. Under
    assumptions (a) (A = C / J, alpha_i = mu_i / J) and (b) (z_i ~ N(0, mu_i E[y^2] / (N J)),
    independent), one label draw gives e_i = |g_i| / sqrt(mu_i) (up to one factor) with g_i standard
    normal: whitening only in expectation, each component scaled by a folded-normal factor (std/mean
    0.756). Pooling `pooled` draws (energy mean over them) gives sqrt(mean_s g_si^2) / sqrt(mu_i).
    Returns the correlation's mean +- std over `draws` Monte Carlo draws, for one draw and for `pooled`.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > mu.max() * 1e-12]  # (d,) the components with statistics
    white = 1.0 / np.sqrt(mu)  # (d,)
    g = np.random.default_rng(seed).standard_normal((draws, max(1, pooled), mu.size))  # (draws, S, d)

    def corr_rows(profiles: NDArray[np.float64]) -> list[float]:
        centred = profiles - profiles.mean(axis=1, keepdims=True)  # (draws, d)
        w = white - white.mean()
        return list(centred @ w / (np.linalg.norm(centred, axis=1) * np.linalg.norm(w)))

    one = np.abs(g[:, 0]) * white  # (draws, d)
    many = np.sqrt((g**2).mean(axis=1)) * white  # (draws, d)
    return {"one_draw": mean_std(corr_rows(one)), f"pooled_{pooled}_draws": mean_std(corr_rows(many)),
            "components": int(mu.size), "draws": draws}


def _whitening_limit(ctx: Context, runs: list[_SeedRun], stats: PatchStats) -> dict[str, Any]:
    """The last step's profiles against whitening: each component's ratio e_i sqrt(mu_i) (normalised
    to mean 1; all 1 for exact whitening), its spread against the folded normal's, and the
    correlation the limit gives under label noise (`whitening_under_label_noise`) next to ours.

    The limit averaged over label draws is exact in closed form: for labels with E[y^2] = 1,
    independent of the images, E[W W^T] = A^+ / N at W = A^+ b, so the expected profile is
    sqrt(u_i^T A^+ u_i) (up to one factor): whitening exactly when A = C / J (assumption (a)).
    `expected_limit_corr` is its correlation with 1/sqrt(mu_i). Both predictions leave out the
    initial mean filter's part of the change (W(t) - W(0) tends to A^+ b - P w_mean(0), P the
    projection on A's range), which the measured profiles include."""
    mu = stats.eigenvalues
    keep = mu > mu.max() * 1e-12
    ratios = []
    for run in runs:
        profile = energy_profile(run.deltas[-1][None], stats.eigenvectors)[keep]  # (d,)
        ratio = profile * np.sqrt(mu[keep])
        ratios.append(ratio / ratio.mean())
    ratio_cv = [float(r.std() / r.mean()) for r in ratios]
    predicted = whitening_under_label_noise(mu, len(runs), seed=0)
    u = stats.eigenvectors[:, keep]  # (d, d')
    expected = np.sqrt(np.maximum(np.einsum("ij,ij->j", u, np.linalg.pinv(runs[0].a_matrix, hermitian=True) @ u), 0.0))
    plots.plot_curves(
        {"last step: e_i sqrt(mu_i), mean 1 (exact whitening: all 1)": {
            **{f"seed {s}": {"x": mu[keep], "mean": r, "points": True} for s, r in zip(ctx.config.seeds, ratios)},
            "label noise, one draw: |g| / E|g|, mean ± std": {"x": np.sort(mu[keep]), "mean": np.ones(int(keep.sum())),
                                                                "std": np.full(int(keep.sum()), FOLDED_NORMAL_CV)}}},
        ctx.figure("linear_cnn_whitening_limit.png"), xlabel="patch eigenvalue mu_i", logx=True,
        title="Linear CNN, random labels: the whitening limit, component by component")
    return {"ratio_cv": mean_std(ratio_cv), "folded_normal_cv": FOLDED_NORMAL_CV, "predicted": predicted,
            "expected_limit_corr": float(pearson(expected, 1.0 / np.sqrt(mu[keep]))),
            "figure": "linear_cnn_whitening_limit.png"}


def _plot(ctx: Context, runs_by_labels: dict[str, list[_SeedRun]]) -> None:
    c = ctx.config
    fit, white, autocorr = ("fit correlation (formula vs profile)", "corr(profile, 1/sqrt(eigenvalue))",
                            f"output autocorrelation, lag {c.autocorr_lags[0]} px")
    panels: dict[str, dict[str, Any]] = {fit: {}, white: {}, autocorr: {}}
    for labels, runs in runs_by_labels.items():
        x = np.array([r["step"] for r in runs[0].rows])

        def curve(key: str, runs: list[_SeedRun] = runs) -> NDArray[np.float64]:
            return np.array([[r[key] for r in run.rows] for run in runs], dtype=float)  # (seeds, points)

        panels[fit][f"{labels} labels"] = series(x, curve("fit_correlation"))
        panels[white][f"{labels}: patch PCA basis"] = series(x, curve("corr_inv_sqrt_patch_eigenvalues"))
        panels[white][f"{labels}: eigenbasis of A"] = series(x, curve("corr_inv_sqrt_A_eigenvalues"))
        panels[autocorr][f"{labels} labels"] = series(
            x, np.array([[r["output_autocorrelation"][0] for r in run.rows] for run in runs]))
    plots.plot_curves(panels, ctx.figure("linear_cnn_dynamics.png"), xlabel="gradient-descent step", logx=True,
                      title=f"Linear CNN, exact full-batch GD ({len(c.seeds)} seeds, mean ± std)",
                      ylims={fit: (-0.05, 1.05), white: (-1.05, 1.05)})


def linear_cnn(ctx: Context) -> dict[str, Any]:
    """Train the paper's linear CNN (full batch, float64), check `simulate` against it step for
    step, then follow the exact dynamics from step 1 far into the whitening regime."""
    from linearcnn.patches import dataset_patch_stats

    c = ctx.config
    dataset = ctx.load(c.linear_images)  # padded as the deep networks' images
    stats = dataset_patch_stats(dataset, c.kernel_size, device=ctx.device)
    images_ac = dataset.normalized()[: c.autocorr_images]  # (n_ac, C, H, W)
    out: dict[str, Any] = {"images": len(dataset.images), "filters": c.linear_filters, "train_steps": c.linear_train_steps,
                           "input_autocorrelation": dict(zip(map(str, c.autocorr_lags),
                                                             input_autocorrelation(images_ac, c.autocorr_lags)))}
    runs_by_labels = {}
    for labels in ("random", "true"):
        runs = [_one_seed(ctx, dataset, stats, images_ac, labels, seed) for seed in c.seeds]
        out[labels] = _summary(ctx, runs, stats, images_ac)
        runs_by_labels[labels] = runs
    _plot(ctx, runs_by_labels)
    out["random"]["whitening_limit"] = _whitening_limit(ctx, runs_by_labels["random"], stats)
    out["figures"] = ["linear_cnn_dynamics.png", "linear_cnn_whitening_limit.png"]
    return out

"""The experiments, one function each: `EXPERIMENTS[name](ctx) -> dict` (the JSON's "results").

Energy profiles are always in the patch-PCA basis of the training images (`ctx.stats`). Two views
of a trained first layer are measured (PAPER.md section 1): **init-subtracted** (W - W0, what the
authors' code does by default, and what the verdicts use) and **raw** (W, the paper's
definition). Every similarity is a Pearson correlation of two profiles; every "x +- y" is the
mean and (population) standard deviation over seeds, or over seed pairs for seed-vs-seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from linearcnn import plots
from linearcnn.energy import (
    energy_profile,
    pearson,
    pooled_energy_profile,
    profile_similarity,
    similarity_matrix,
)
from linearcnn.errors import LinearCNNInputError
from linearcnn.fit import fit_filters, fit_formula
from validation.initialisers import first_layer_inits
from validation.linear_cnn import linear_cnn
from validation.measures import arms_of, both_views, fit_stats, loglog_slope, mean_std, profiles, series
from validation.runs import Context, Trained
from validation.tasks import binary_pairs, large_kernel, pca_labels

# -------------------------------------------------------------------------------------------------
# 2. consistency (Table 1)


def consistency(ctx: Context) -> dict[str, Any]:
    """Seed vs seed, width vs width, trained vs init, VGG11 vs ResNet20 (true labels)."""
    c = ctx.config
    vgg = ctx.trained_all(ctx.arm("vgg11"))
    wide = ctx.trained_all(ctx.arm("vgg11", width=c.vgg_wide_width))
    out: dict[str, Any] = {
        "seed_vs_seed": both_views(ctx, vgg, None),
        "width_vs_width": both_views(ctx, vgg, wide),
        "trained_vs_init": both_views(ctx, vgg, None, against_init=True),
        "widths": [c.vgg_width, c.vgg_wide_width],
        "resnet_width": c.resnet_width,
    }
    groups = [(f"VGG11 w{c.vgg_width}", vgg), (f"VGG11 w{c.vgg_wide_width}", wide)]
    if c.skip_plain_resnet:
        out["not_measured"] = {"vgg_vs_resnet": c.skip_plain_resnet}
    else:
        resnet = ctx.trained_all(ctx.arm("resnet20"))
        out["vgg_vs_resnet"] = both_views(ctx, vgg, resnet)
        groups.append((f"ResNet20 w{c.resnet_width}", resnet))
    if c.resnet_momentum:  # the labelled momentum arms: VGG11 and ResNet20 with the same optimiser
        m = c.resnet_momentum
        vgg_m = ctx.trained_all(ctx.arm("vgg11", momentum=m))
        resnet_m = ctx.trained_all(ctx.arm("resnet20", width=c.resnet_momentum_width, momentum=m))
        out["vgg_vs_resnet_momentum"] = both_views(ctx, vgg_m, resnet_m)
        out["resnet_momentum"] = {"momentum": m, "width": c.resnet_momentum_width}
        groups.append((f"ResNet20 w{c.resnet_momentum_width} m{m:g}", resnet_m))
    labels, rows = [], []
    for name, runs in groups:
        for r in runs:
            labels.append(f"{name} s{r.seed}")
            rows.append(profiles(ctx, r)["sub"])
    labels.append(f"init VGG11 s{vgg[0].seed}")
    rows.append(profiles(ctx, vgg[0])["init"])
    matrix = similarity_matrix(rows)
    plots.plot_similarity_heatmap(matrix, labels, ctx.figure("consistency_heatmap.png"),
                                  title="Init-subtracted energy profiles: Pearson correlation")
    out["matrix"] = {"labels": labels, "values": matrix.tolist()}
    out["figures"] = ["consistency_heatmap.png"]
    return out


# -------------------------------------------------------------------------------------------------
# 3. labels (Table 2)


def labels(ctx: Context) -> dict[str, Any]:
    """Random-label nets against their initialisation, and true- against random-label nets."""
    true = ctx.trained_all(ctx.arm("vgg11"))
    random = ctx.trained_all(ctx.arm("vgg11", labels="random"))
    out: dict[str, Any] = {
        "random_vs_init": both_views(ctx, random, None, against_init=True),
        "true_vs_random": both_views(ctx, true, random),
        "train_accuracy": {"true": mean_std([r.train_accuracy for r in true]),
                           "random": mean_std([r.train_accuracy for r in random])},
    }
    mu = ctx.stats.eigenvalues
    groups = {"true labels": np.stack([profiles(ctx, r)["sub"] for r in true]),
              "random labels": np.stack([profiles(ctx, r)["sub"] for r in random])}
    pooled_true = pooled_energy_profile([r.final for r in true], ctx.stats.eigenvectors, initial=[r.initial for r in true])
    pooled_fit = fit_formula(pooled_true, mu)
    similarity = out["true_vs_random"]["init_subtracted"]["mean"]
    plots.plot_profile_bands(groups, ctx.figure("true_vs_random.png"), formula=pooled_fit.fitted_profile,
                             formula_label=f"formula fitted to the true-label layers (tau {pooled_fit.tau:.3g})",
                             title="VGG11 first layer, init-subtracted energy profiles"
                                   + ("" if similarity is None else f" (true vs random: {similarity:.2f})"))
    labels_, rows = [], []
    for name, runs in (("true", true), ("random", random)):
        for r in runs:
            labels_.append(f"{name} s{r.seed}")
            rows.append(profiles(ctx, r)["sub"])
    for r in random:
        labels_.append(f"init s{r.seed}")
        rows.append(profiles(ctx, r)["init"])
    plots.plot_similarity_heatmap(similarity_matrix(rows), labels_, ctx.figure("labels_heatmap.png"),
                                  title="True vs random labels vs init (init-subtracted profiles)")
    # the two views of one layer: how much of the raw profile is the initial layer's (deviation 3)
    p = profiles(ctx, true[0])
    out["views"] = {"learned_energy_share": mean_std([np.linalg.norm(r.final - r.initial) ** 2 / np.linalg.norm(r.final) ** 2
                                                      for r in true + random]),
                    "raw_vs_init_profile": mean_std([profile_similarity(q["raw"], q["init"])
                                                     for q in (profiles(ctx, r) for r in true + random)])}
    components = np.arange(p["sub"].size, dtype=float)
    plots.plot_curves({"energy per component (true labels, seed " + str(true[0].seed) + ")": {
        name: {"x": components, "mean": p[key]} for name, key in
        (("initial layer W0", "init"), ("trained layer W (raw view)", "raw"), ("W - W0 (init-subtracted view)", "sub"))}},
        ctx.figure("raw_vs_init_subtracted.png"), xlabel="patch-PCA component (descending eigenvalue)",
        logy=["energy per component (true labels, seed " + str(true[0].seed) + ")"],
        title="Why the raw view follows the initialisation: the learned part is small")
    out["figures"] = ["true_vs_random.png", "labels_heatmap.png", "raw_vs_init_subtracted.png"]
    return out


# -------------------------------------------------------------------------------------------------
# 4. formula fit (Table 3)


def _fit_models(ctx: Context) -> dict[str, Any]:
    """The true-label networks the formula is fitted to, by name: VGG11 and ResNet20 (plain SGD;
    ResNet20 unless `skip_plain_resnet`), VGG11 at the second width, and the labelled momentum arms of both."""
    c = ctx.config
    models = {"vgg11": ctx.arm("vgg11"), f"vgg11-w{c.vgg_wide_width}": ctx.arm("vgg11", width=c.vgg_wide_width)}
    if not c.skip_plain_resnet:
        models["resnet20"] = ctx.arm("resnet20")
    if c.resnet_momentum:
        m = c.resnet_momentum
        models[f"vgg11-m{m:g}"] = ctx.arm("vgg11", momentum=m)
        models[f"resnet20-m{m:g}"] = ctx.arm("resnet20", width=c.resnet_momentum_width, momentum=m)
    return models


def formula_fit(ctx: Context) -> dict[str, Any]:
    """Fit the formula to every true-label network of the suite (init-subtracted: one parameter tau;
    raw: two parameters), with the random initialisation as the baseline. "every_model" pools the
    fits of all of them whose runs all converged (the paper's "five models"); the others are named
    in "left_out"."""
    mu, u = ctx.stats.eigenvalues, ctx.stats.eigenvectors
    out: dict[str, Any] = {}
    figures = []
    pooled: list[Any] = []
    included, left_out = [], []
    for name_, arm in _fit_models(ctx).items():
        runs = ctx.trained_all(arm)
        sub = [fit_filters(r.final - r.initial, mu, u, bootstrap=ctx.config.bootstrap, seed=r.seed) for r in runs]
        raw = [fit_formula(profiles(ctx, r)["raw"], mu, raw=True) for r in runs]
        out[name_] = {"init_subtracted": fit_stats(sub), "raw": fit_stats(raw),
                      "raw_init_ratio": mean_std([f.init_ratio for f in raw]), "arms": arms_of(runs),
                      "converged": all(r.converged for r in runs)}
        if out[name_]["converged"]:
            pooled += sub
            included.append(arm.key)
        else:
            left_out.append(arm.key)
        if "-w" in name_ or name_.startswith("vgg11-m"):
            continue  # figures for the two architectures and the ResNet arm that converges
        name = f"formula_fit_{name_}.png"
        plots.plot_fit(sub[0].profile, sub[0].fitted_profile, sub[0].correlation, ctx.figure(name),
                       label=f"{name_} seed {runs[0].seed} (init-subtracted)", eigenvalues=mu,
                       interval=sub[0].interval.get("correlation"))
        figures.append(name)
        name = f"formula_fit_{name_}_raw.png"
        plots.plot_fit(raw[0].profile, raw[0].fitted_profile, raw[0].correlation, ctx.figure(name),
                       label=f"{name_} seed {runs[0].seed} (raw, two-parameter fit)", eigenvalues=mu)
        figures.append(name)
    out["every_model"] = {"init_subtracted": {**fit_stats(pooled), "arms": included}, "models": included,
                          "left_out": left_out}
    inits = [r.initial for r in ctx.trained_all(ctx.arm("vgg11"))]
    init_fits = [fit_formula(energy_profile(w, ctx.stats.eigenvectors), mu) for w in inits]
    init_raw = [fit_formula(energy_profile(w, ctx.stats.eigenvectors), mu, raw=True) for w in inits]
    out["random_init"] = {"one_parameter": fit_stats(init_fits), "raw": fit_stats(init_raw), "arms": []}
    plots.plot_fit(init_fits[0].profile, init_fits[0].fitted_profile, init_fits[0].correlation,
                   ctx.figure("formula_fit_random_init.png"), label="random initialisation (VGG11)", eigenvalues=mu)
    plots.plot_eigenvectors(ctx.stats.eigenvectors, ctx.stats.channels, ctx.stats.kernel_size,
                            ctx.figure("patch_eigenvectors.png"), eigenvalues=mu)
    out["eigenvalues"] = mu.tolist()
    out["figures"] = figures + ["formula_fit_random_init.png", "patch_eigenvectors.png"]
    return out


# -------------------------------------------------------------------------------------------------
# 5. frozen random first layer


def _frozen_title(out: dict[str, Any]) -> str:
    learned, fixed = out["learned"]["test_accuracy"]["mean"], out["frozen"]["test_accuracy"]["mean"]
    if learned is None or fixed is None:
        return "VGG11: learned vs frozen first layer (no test split: test accuracy not measured)"
    return f"VGG11: test accuracy learned {learned:.3f}, frozen {fixed:.3f}"


def _per_epoch(runs: list[Trained], key: str) -> dict[str, np.ndarray]:
    """Mean +- std over seeds of a per-epoch metric; runs that stopped earlier (stopping rule) are
    missing (NaN) in the later epochs."""
    length = max(len(r.metrics[key]) for r in runs)
    values = np.full((len(runs), length), np.nan)  # (seeds, epochs)
    for i, r in enumerate(runs):
        values[i, : len(r.metrics[key])] = r.metrics[key]
    return series(np.arange(1, length + 1), values)


def frozen(ctx: Context) -> dict[str, Any]:
    """VGG11 with its first layer frozen at the random initialisation vs learned, same seeds."""
    learned = ctx.trained_all(ctx.arm("vgg11"))
    fixed = ctx.trained_all(ctx.arm("vgg11", frozen=True))
    out = {
        "learned": {"train_accuracy": mean_std([r.train_accuracy for r in learned]),
                    "test_accuracy": mean_std([r.test_accuracy for r in learned])},
        "frozen": {"train_accuracy": mean_std([r.train_accuracy for r in fixed]),
                   "test_accuracy": mean_std([r.test_accuracy for r in fixed])},
        "test_accuracy_difference": mean_std([f.test_accuracy - l.test_accuracy for f, l in zip(fixed, learned)]),
        "train_accuracy_difference": mean_std([f.train_accuracy - l.train_accuracy for f, l in zip(fixed, learned)]),
        "chance": 1.0 / max(1, len(ctx.train_set.classes)),
        "arms": arms_of(learned + fixed),
    }
    panels = {f"train {key} (per epoch)": {"learned first layer": _per_epoch(learned, key),
                                           "frozen random first layer": _per_epoch(fixed, key)}
              for key in ("accuracy", "loss")}
    plots.plot_curves(panels, ctx.figure("frozen_vs_learned.png"), xlabel="epoch",
                      title=_frozen_title(out))
    out["figures"] = ["frozen_vs_learned.png"]
    return out


# -------------------------------------------------------------------------------------------------
# 6. trajectories along training


def _trajectory(ctx: Context, run: Trained) -> dict[str, np.ndarray]:
    """Fit correlation, tau, displacement and recent loss at every snapshot after step 0."""
    mu, u = ctx.stats.eigenvalues, ctx.stats.eigenvectors
    step_loss = np.asarray(run.metrics.get("step_loss", []), dtype=float)
    rows: dict[str, list[Any]] = {"steps": [], "correlation": [], "tau": [], "displacement": [], "loss": [], "profile": []}
    previous = 0
    for step, weights in zip(run.snapshot_steps, run.snapshots):
        if step == 0:
            continue
        profile = energy_profile(weights, u, initial=run.initial)
        if np.ptp(profile) == 0:
            continue
        fit = fit_formula(profile, mu)
        rows["steps"].append(int(step))
        rows["correlation"].append(fit.correlation)
        rows["tau"].append(fit.tau)
        rows["displacement"].append(float(np.linalg.norm(weights - run.initial) / np.linalg.norm(run.initial)))
        recent = step_loss[previous:step] if step_loss.size >= step else np.array([])
        rows["loss"].append(float(recent.mean()) if recent.size else float("nan"))
        rows["profile"].append(profile)
        previous = int(step)
    return {k: np.asarray(v) for k, v in rows.items()}


def trajectories(ctx: Context) -> dict[str, Any]:
    """Fit correlation and tau along training from the first-layer snapshots, true vs random
    labels, and what the end tau goes with (steps, lr, displacement of the layer, loss)."""
    c = ctx.config
    arms = {"true": ctx.arm("vgg11"), "random": ctx.arm("vgg11", labels="random")}
    for f in c.lr_factors:
        arms[f"true, lr x{f:g}"] = ctx.arm("vgg11", lr_factor=f)
    for m in c.momentum_arms:
        arms[f"true, momentum {m:g}"] = ctx.arm("vgg11", momentum=m)
    traj = {name: [_trajectory(ctx, r) for r in ctx.trained_all(arm)] for name, arm in arms.items()}
    out: dict[str, Any] = {"arms": {name: {"arch": a.arch, "width": a.width, "labels": a.labels, "lr": a.lr,
                                           "momentum": a.momentum, "key": a.key} for name, a in arms.items()}}
    per_arm: dict[str, Any] = {}
    curves = {}
    for name, runs in traj.items():
        steps = runs[0]["steps"]
        length = min(len(r["steps"]) for r in runs)
        corr = np.stack([r["correlation"][:length] for r in runs])
        log_tau = np.stack([np.log(r["tau"][:length]) for r in runs])
        per_arm[name] = {
            "steps": steps[:length].tolist(),
            "correlation": [mean_std(corr[:, i]) for i in range(length)],
            "tau_geomean": np.exp(log_tau.mean(axis=0)).tolist(),
            "end_correlation": mean_std([r["correlation"][-1] for r in runs]),  # each run's own end
            "end_tau": mean_std([r["tau"][-1] for r in runs]),
            "min_correlation": mean_std([r["correlation"].min() for r in runs]),
            "end_displacement": mean_std([r["displacement"][-1] for r in runs]),
            "end_loss": mean_std([r["loss"][-1] for r in runs]),
            "tau_vs_steps_loglog_slope": mean_std([loglog_slope(r["steps"].astype(float), r["tau"]) for r in runs]),
            "tau_vs_displacement_loglog_slope": mean_std([loglog_slope(r["displacement"], r["tau"]) for r in runs]),
        }
        curves[name] = {"steps": steps[:length], "correlation": corr.mean(axis=0), "correlation_std": corr.std(axis=0),
                        "tau": np.exp(log_tau.mean(axis=0))}
    out["per_arm"] = per_arm
    # end tau against lr (true labels): the theory's tau = lr * t would scale with the lr factor
    base = per_arm["true"]["end_tau"]["mean"]
    out["end_tau_ratio_vs_lr"] = {f"x{f:g}": (per_arm[f"true, lr x{f:g}"]["end_tau"]["mean"] / base if base else None)
                                  for f in c.lr_factors}
    out["end_tau_ratio_true_over_random"] = (base / per_arm["random"]["end_tau"]["mean"]
                                             if per_arm["random"]["end_tau"]["mean"] else None)
    # all snapshots pooled: how tightly does log tau follow log displacement, log steps, loss?
    pooled = {k: np.concatenate([r[k] for runs in traj.values() for r in runs]) for k in ("tau", "displacement", "steps", "loss")}
    log_tau = np.log(pooled["tau"])
    out["pooled_correlation_of_log_tau_with"] = {
        "log_displacement": float(pearson(log_tau, np.log(pooled["displacement"]))),
        "log_steps": float(pearson(log_tau, np.log(pooled["steps"].astype(float)))),
        "recent_loss": float(pearson(log_tau[np.isfinite(pooled["loss"])], pooled["loss"][np.isfinite(pooled["loss"])])),
    }
    # same path, different speed? each random-label snapshot vs the true-label snapshot of nearest tau (same seed)
    matched, gaps = [], []
    for t_run, r_run in zip(traj["true"], traj["random"]):
        for profile, tau in zip(r_run["profile"], r_run["tau"]):
            j = int(np.argmin(np.abs(np.log(t_run["tau"]) - np.log(tau))))
            matched.append(profile_similarity(profile, t_run["profile"][j]))
            gaps.append(abs(math.log(t_run["tau"][j] / tau)))
    out["random_vs_true_at_nearest_tau"] = {"similarity": mean_std(matched), "abs_log_tau_gap": mean_std(gaps)}
    # the same comparison at the end of training (different tau): what the labels claim measures
    ends = [(r_run["tau"][-1], profile_similarity(r_run["profile"][-1], t_run["profile"][-1]))
            for t_run, r_run in zip(traj["true"], traj["random"])]
    plots.plot_scatter({"each random-label snapshot vs the true-label snapshot of nearest tau (same seed)":
                        (np.concatenate([r["tau"] for r in traj["random"]]), np.asarray(matched)),
                        "end of training vs end of training (the Table 2 comparison)":
                        (np.asarray([t for t, _ in ends]), np.asarray([v for _, v in ends]))},
                       ctx.figure("true_vs_random_matched_tau.png"), xlabel="fitted tau of the random-label layer",
                       ylabel="profile similarity to the true-label layer", logx=True,
                       title="True vs random labels: same path, different speed?")
    plots.plot_trajectories(curves, ctx.figure("trajectories.png"),
                            title=f"VGG11 first layer along training ({len(c.seeds)} seeds; tau: geometric mean)")
    plots.plot_scatter({name: (np.concatenate([r["displacement"] for r in runs]), np.concatenate([r["tau"] for r in runs]))
                        for name, runs in traj.items()}, ctx.figure("tau_vs_displacement.png"),
                       xlabel="||W - W0|| / ||W0|| (first layer)", ylabel="fitted tau", logx=True, logy=True,
                       title="Fitted tau against how far the first layer moved (all snapshots)")
    out["figures"] = ["trajectories.png", "tau_vs_displacement.png", "true_vs_random_matched_tau.png"]
    return out


# -------------------------------------------------------------------------------------------------
# 7. external checkpoints


def external(ctx: Context) -> dict[str, Any]:
    """Energy profiles, fits and the similarity matrix of the checkpoints the user passed."""
    from linearcnn.checkpoints import load_first_layer
    from linearcnn.patches import dataset_patch_stats

    if not ctx.checkpoints:
        return {"skipped": True, "note": "no checkpoints given (pass --checkpoints PATH,PATH,...)"}
    stats_by_kernel = {ctx.config.kernel_size: ctx.stats}
    channels = int(ctx.train_set.images.shape[1])
    rows: list[dict[str, Any]] = []
    measured: list[tuple[int, np.ndarray]] = []
    names: list[str] = []
    for path in ctx.checkpoints:
        layer = load_first_layer(path)
        _, c_in, kh, kw = layer.weight.shape
        if c_in != channels or kh != kw:
            raise LinearCNNInputError(
                f"checkpoints {path!r}: first layer {layer.name!r} has shape {layer.weight.shape}; expected "
                f"{channels} input channels (data {ctx.data!r}) and a square kernel", parameter="checkpoints")
        if kh not in stats_by_kernel:
            stats_by_kernel[kh] = dataset_patch_stats(ctx.train_set, kh, device=ctx.device)
        stats = stats_by_kernel[kh]
        raw = energy_profile(layer.weight, stats.eigenvectors)
        sub = None if layer.init_weight is None else energy_profile(layer.weight, stats.eigenvectors, initial=layer.init_weight)
        fit_raw = fit_formula(raw, stats.eigenvalues, raw=True)
        fit_sub = None if sub is None else fit_formula(sub, stats.eigenvalues)
        rows.append({"path": str(path), "layer": layer.name, "format": layer.format, "shape": list(layer.weight.shape),
                     "raw_fit_correlation": fit_raw.correlation,
                     "init_subtracted_fit_correlation": None if fit_sub is None else fit_sub.correlation,
                     "init_subtracted_tau": None if fit_sub is None else fit_sub.tau})
        measured.append((kh, raw))
        names.append(f"{len(names)}: {layer.name}")
    out: dict[str, Any] = {"skipped": False, "checkpoints": rows}
    kernels = {k for k, _ in measured}
    if len(kernels) == 1 and len(measured) > 1:
        matrix = similarity_matrix([p for _, p in measured])
        out["raw_similarity"] = matrix.tolist()
        plots.plot_similarity_heatmap(matrix, names, ctx.figure("external_heatmap.png"),
                                      title="External checkpoints: raw energy-profile correlation")
        out["figures"] = ["external_heatmap.png"]
    else:
        out["note"] = "similarity matrix needs two or more checkpoints of one kernel size"
    return out


EXPERIMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "linear_cnn": linear_cnn,
    "consistency": consistency,
    "labels": labels,
    "formula_fit": formula_fit,
    "binary_pairs": binary_pairs,
    "pca_labels": pca_labels,
    "large_kernel": large_kernel,
    "frozen": frozen,
    "trajectories": trajectories,
    "external": external,
    "init": first_layer_inits,
}
#: What `validate` runs without `--only`: the paper's claims. `init` (linearcnn's own question, not
#: a claim of the paper) runs on its own: `--only init`.
DEFAULT_EXPERIMENTS = tuple(name for name in EXPERIMENTS if name != "init")

"""Experiments on the derived tasks of `validation.task_data` (PAPER.md section 4, the rows the
core tables leave out): the formula fit on two-class class pairs, labels made from the energy of
one patch-PCA component, and a large (7x7) first layer on larger crops of the built-in photos.

Each network of a task is profiled in the patch-PCA basis of the images it trained on
(`Context.stats_for`): a class pair's own images, or the data set's for PCA-component labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linearcnn import plots
from linearcnn.fit import fit_filters
from validation.measures import arms_of, both_views, fit_stats, mean_std, profiles
from validation.runs import Context
from validation.task_data import crop_task, pair_task, pca_task


def binary_pairs(ctx: Context) -> dict[str, Any]:
    """VGG11 trained on each class pair of `config.binary_pairs` (true labels, 0 and 1), the formula
    fitted to its init-subtracted first layer in the pair's own patch-PCA basis. "fit" pools the
    fits of every pair and seed."""
    c = ctx.config
    out: dict[str, Any] = {"pairs": {}}
    pooled: list[Any] = []
    arms: list[str] = []
    groups: dict[str, np.ndarray] = {}
    for a, b in c.binary_pairs:
        task = pair_task(a, b)
        train, _, stats, info = ctx.task(task)
        runs = ctx.trained_all(ctx.arm("vgg11", task=task))
        fits = [fit_filters(r.final - r.initial, stats.eigenvalues, stats.eigenvectors, bootstrap=c.bootstrap, seed=r.seed)
                for r in runs]
        pooled += fits
        arms += arms_of(runs)
        out["pairs"][f"{a}-{b}"] = {
            **info, "fit": fit_stats(fits), "arms": arms_of(runs),
            "train_accuracy": mean_std([r.train_accuracy for r in runs]),
            "test_accuracy": mean_std([r.test_accuracy for r in runs]),
        }
        groups[f"classes {a} vs {b} ({', '.join(train.classes)})"] = np.stack([profiles(ctx, r)["sub"] for r in runs])
    out["fit"] = {"init_subtracted": {**fit_stats(pooled), "arms": sorted(set(arms))}}
    means = [p["fit"]["correlation"]["mean"] for p in out["pairs"].values() if p["fit"]["correlation"]["mean"] is not None]
    out["fit"]["range_over_pairs"] = [min(means), max(means)] if means else None
    plots.plot_profile_bands(groups, ctx.figure("binary_pairs.png"),
                             title="VGG11 on two-class pairs: init-subtracted profiles (each pair in its own PCA basis)")
    out["figures"] = ["binary_pairs.png"]
    return out


def pca_labels(ctx: Context) -> dict[str, Any]:
    """VGG11 trained on labels made from the energy of patch-PCA component
    `config.pca_label_component` (assumption (b) broken on purpose), compared with the random-label
    and the true-label networks of the same images (matched seeds)."""
    c = ctx.config
    task = pca_task(c.pca_label_component)
    _, _, _, info = ctx.task(task)
    pca = ctx.trained_all(ctx.arm("vgg11", task=task))
    random = ctx.trained_all(ctx.arm("vgg11", labels="random"))
    true = ctx.trained_all(ctx.arm("vgg11"))
    mu, u = ctx.stats.eigenvalues, ctx.stats.eigenvectors
    fits = [fit_filters(r.final - r.initial, mu, u, bootstrap=c.bootstrap, seed=r.seed) for r in pca]
    out: dict[str, Any] = {
        "labels": info,
        "pca_vs_random": both_views(ctx, pca, random),
        "pca_vs_true": both_views(ctx, pca, true),
        "true_vs_random": both_views(ctx, true, random),
        "fit": fit_stats(fits),
        "train_accuracy": mean_std([r.train_accuracy for r in pca]),
        "test_accuracy": mean_std([r.test_accuracy for r in pca]),
        "arms": arms_of(pca),
    }
    # where the PCA-label layer puts its energy: the share on the labelling component, vs the others
    share = [p[c.pca_label_component] ** 2 / np.sum(p**2) for p in (profiles(ctx, r)["sub"] for r in pca)]
    out["energy_share_of_label_component"] = mean_std(share)
    groups = {f"PCA-component-{c.pca_label_component} labels": np.stack([profiles(ctx, r)["sub"] for r in pca]),
              "random labels": np.stack([profiles(ctx, r)["sub"] for r in random]),
              "true labels": np.stack([profiles(ctx, r)["sub"] for r in true])}
    plots.plot_profile_bands(groups, ctx.figure("pca_labels.png"),
                             title=f"VGG11, labels from PCA component {c.pca_label_component} vs random vs true labels")
    out["figures"] = ["pca_labels.png"]
    return out


def large_kernel(ctx: Context) -> dict[str, Any]:
    """ResNet18 (7x7 stride-2 stem, as the paper's ImageNet figure) on `config.large_kernel_crop`
    pixel crops of the built-in photos, true labels, the labelled momentum arm; the formula fitted
    to its init-subtracted first layer over all 3 x 7 x 7 = 147 components. Only for `builtin`."""
    from linearcnn.data import parse_data_spec

    c = ctx.config
    if parse_data_spec(ctx.data).kind != "builtin":
        return {"skipped": True, "note": "needs the built-in photos at larger crops (builtin:N@C)", "figures": []}
    kernel = 7
    task = crop_task(c.large_kernel_crop, kernel)
    _, _, stats, info = ctx.task(task)
    arm = ctx.arm("resnet18", width=c.large_kernel_width, momentum=c.large_kernel_momentum, task=task, kernel_size=kernel)
    runs = ctx.trained_all(arm)
    fits = [fit_filters(r.final - r.initial, stats.eigenvalues, stats.eigenvectors, bootstrap=c.bootstrap, seed=r.seed)
            for r in runs]
    out: dict[str, Any] = {
        **info, "components": int(stats.eigenvalues.size), "arms": arms_of(runs),
        "fit": {"init_subtracted": {**fit_stats(fits), "arms": arms_of(runs)}},
        "train_accuracy": mean_std([r.train_accuracy for r in runs]),
        "test_accuracy": mean_std([r.test_accuracy for r in runs]),
        "displacement": mean_std([r.displacement for r in runs]),
    }
    first = fits[0]
    plots.plot_fit(first.profile, first.fitted_profile, first.correlation, ctx.figure("large_kernel_fit.png"),
                   label=f"ResNet18 7x7 stem, {c.large_kernel_crop}px crops, seed {runs[0].seed} (init-subtracted)",
                   eigenvalues=stats.eigenvalues, interval=first.interval.get("correlation"))
    plots.plot_eigenvectors(stats.eigenvectors, stats.channels, kernel, ctx.figure("large_kernel_eigenvectors.png"),
                            eigenvalues=stats.eigenvalues)
    out["figures"] = ["large_kernel_fit.png", "large_kernel_eigenvectors.png"]
    return out


__all__ = ["binary_pairs", "large_kernel", "pca_labels"]

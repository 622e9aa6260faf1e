"""The experiment `init`: a first layer initialised where training would take it, and what that
does to training (`linearcnn train --first-layer-init`, `linearcnn.first_layer_init`).

For VGG11 (with batch norm) and ResNet20, on each data set, every initialiser of
`config.init_names` (default, whitening, formula with the tau predicted for the run, frozen
whitening) trains the same number of epochs (`init_vgg_epochs`, `init_resnet_epochs`; no early
stop, so that every arm has the same budget) with the paper's optimiser (plain SGD, lr 0.01, batch
256), 3 seeds, the test split evaluated every `init_test_every` epochs. Measured per arm:

* steps (and training seconds, test passes left out) until the train accuracy of an epoch first
  reaches each of `init_train_thresholds`, and until the test accuracy first reaches each of
  `init_test_thresholds` (only at the epochs evaluated); "n of 3" when some seeds never do;
* final train and test accuracy;
* the first layer's trajectory: at each snapshot, the formula's one-parameter fit to the *raw*
  profile (where the layer is, not how far it moved: correlation and tau), ||W - W0|| / ||W0||,
  and the similarity of the raw profile to the one it started from ("does the layer stay there").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linearcnn import plots
from linearcnn.energy import energy_profile, profile_similarity
from linearcnn.fit import fit_formula
from validation.measures import arms_of, mean_std, series
from validation.runs import Context, Trained

FAMILIES = (("vgg11", "VGG11"), ("resnet20", "ResNet20"))


def _first_step(steps: list[int], values: list[float], threshold: float) -> int | None:
    """The first step whose value reaches `threshold` (None: never)."""
    for step, value in zip(steps, values):
        if value is not None and np.isfinite(value) and value >= threshold:
            return int(step)
    return None


def _seconds_at(run: Trained, step: int | None) -> float | None:
    """Training seconds (epochs only, no test passes) summed up to the epoch ending at `step`."""
    if step is None:
        return None
    seconds = np.cumsum(np.asarray(run.metrics.get("seconds", []), dtype=float))
    ends = list(run.metrics.get("step", []))
    return float(seconds[ends.index(step)]) if step in ends and len(seconds) == len(ends) else None


def _trajectory(ctx: Context, run: Trained) -> dict[str, np.ndarray]:
    """Raw-profile fit (correlation, tau, honest or not), displacement and similarity to the start, per snapshot."""
    mu, u = ctx.stats.eigenvalues, ctx.stats.eigenvectors
    start = energy_profile(run.initial, u)
    rows: dict[str, list[Any]] = {"steps": [], "correlation": [], "tau": [], "honest": [], "displacement": [], "to_start": []}
    for step, weights in zip(run.snapshot_steps, run.snapshots):
        profile = energy_profile(weights, u)
        fit = fit_formula(profile, mu)
        rows["steps"].append(int(step))
        rows["correlation"].append(fit.correlation)
        rows["tau"].append(fit.tau)
        rows["honest"].append(not (fit.at_bound or fit.degenerate))
        rows["displacement"].append(float(np.linalg.norm(weights - run.initial) / np.linalg.norm(run.initial)))
        rows["to_start"].append(profile_similarity(profile, start))
    return {k: np.asarray(v) for k, v in rows.items()}


def _arm_summary(ctx: Context, runs: list[Trained]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON summary of one initialiser's seeds, curves for the figures)."""
    c = ctx.config
    reach: dict[str, Any] = {}
    for split, thresholds in (("train", c.init_train_thresholds), ("test", c.init_test_thresholds)):
        for threshold in thresholds:
            if split == "train":
                steps = [_first_step(r.metrics["step"], r.metrics["accuracy"], threshold) for r in runs]
            else:
                steps = [_first_step(r.metrics["test_step"], r.metrics["test_accuracy"], threshold) for r in runs]
            reach[f"{split} {threshold:g}"] = {
                "steps": mean_std(steps), "seconds": mean_std([_seconds_at(r, s) for r, s in zip(runs, steps)]),
                "reached": sum(s is not None for s in steps), "of": len(runs),
            }
    paths = [_trajectory(ctx, r) for r in runs]
    length = min(len(p["steps"]) for p in paths)
    log_tau = np.stack([np.log(p["tau"][:length]) for p in paths])
    summary = {
        "reach": reach,
        "train_accuracy": mean_std([r.train_accuracy for r in runs]),
        "test_accuracy": mean_std([r.test_accuracy for r in runs]),
        "steps": mean_std([r.steps for r in runs]),
        "train_seconds": mean_std([float(sum(r.metrics.get("seconds", []))) for r in runs]),
        "start": {"correlation": mean_std([p["correlation"][0] for p in paths]), "tau": mean_std([p["tau"][0] for p in paths]),
                  "honest": int(sum(bool(p["honest"][0]) for p in paths))},
        "end": {"correlation": mean_std([p["correlation"][-1] for p in paths]), "tau": mean_std([p["tau"][-1] for p in paths]),
                "honest": int(sum(bool(p["honest"][-1]) for p in paths)),
                "displacement": mean_std([p["displacement"][-1] for p in paths]),
                "similarity_to_start": mean_std([p["to_start"][-1] for p in paths])},
        "trajectory": {"steps": paths[0]["steps"][:length].tolist(),
                       "correlation": np.mean([p["correlation"][:length] for p in paths], axis=0).tolist(),
                       "tau_geomean": np.exp(log_tau.mean(axis=0)).tolist(),
                       "similarity_to_start": np.mean([p["to_start"][:length] for p in paths], axis=0).tolist()},
        "arms": arms_of(runs),
    }
    train_len = min(len(r.metrics["step"]) for r in runs)
    test_len = min(len(r.metrics["test_step"]) for r in runs)
    curves = {
        "train": series(runs[0].metrics["step"][:train_len], [r.metrics["accuracy"][:train_len] for r in runs]),
        "test": series(runs[0].metrics["test_step"][:test_len], [r.metrics["test_accuracy"][:test_len] for r in runs]),
        "tau": {"x": np.asarray(paths[0]["steps"][:length], dtype=float), "mean": np.exp(log_tau.mean(axis=0)),
                "std": None},
        "correlation": series(paths[0]["steps"][:length], [p["correlation"][:length] for p in paths]),
    }
    return summary, curves


def first_layer_inits(ctx: Context) -> dict[str, Any]:
    """Each initialiser against the default one, per architecture (module docstring)."""
    c = ctx.config
    out: dict[str, Any] = {"inits": list(c.init_names), "train_thresholds": list(c.init_train_thresholds),
                           "test_thresholds": list(c.init_test_thresholds), "test_every": c.init_test_every, "archs": {}}
    accuracy_panels: dict[str, dict[str, Any]] = {}
    layer_panels: dict[str, dict[str, Any]] = {}
    for family, title in FAMILIES:
        epochs = c.init_vgg_epochs if family == "vgg11" else c.init_resnet_epochs
        per_init: dict[str, Any] = {}
        for name in c.init_names:
            runs = ctx.trained_all(ctx.arm(family, init=name, epochs=epochs))
            summary, curves = _arm_summary(ctx, runs)
            per_init[name] = summary
            arch, width = runs[0].arm.arch, runs[0].arm.width
            accuracy_panels.setdefault(f"{title}: train accuracy", {})[name] = curves["train"]
            accuracy_panels.setdefault(f"{title}: test accuracy", {})[name] = {**curves["test"], "points": False}
            layer_panels.setdefault(f"{title}: fitted tau (raw profile)", {})[name] = {
                k: v for k, v in curves["tau"].items() if v is not None}
            layer_panels.setdefault(f"{title}: fit correlation (raw profile)", {})[name] = curves["correlation"]
        default = per_init.get("default")
        if default is not None:  # steps to each threshold relative to the default initialisation
            for summary in per_init.values():
                summary["steps_ratio_to_default"] = {
                    key: (summary["reach"][key]["steps"]["mean"] / default["reach"][key]["steps"]["mean"]
                          if summary["reach"][key]["steps"]["mean"] and default["reach"][key]["steps"]["mean"]
                          and summary["reach"][key]["reached"] == summary["reach"][key]["of"]
                          and default["reach"][key]["reached"] == default["reach"][key]["of"] else None)
                    for key in summary["reach"]}
        out["archs"][family] = {"arch": arch, "width": width, "epochs": epochs, "per_init": per_init}
    data = ctx.data_record()["spec"]
    plots.plot_curves(accuracy_panels, ctx.figure("init_accuracy.png"),
                      title=f"First-layer initialisers on {data}: accuracy vs step (mean ± std over seeds; plain SGD lr {c.lr:g})",
                      ylims=dict.fromkeys(accuracy_panels, (0.0, 1.02)))
    plots.plot_curves(layer_panels, ctx.figure("init_tau.png"),
                      title=f"First layer along training on {data}: the formula fitted to the raw profile "
                      "(tau: geometric mean over seeds; correlation: mean ± std)",
                      logy=[p for p in layer_panels if "tau" in p])
    out["figures"] = ["init_accuracy.png", "init_tau.png"]
    return out


__all__ = ["first_layer_inits"]

"""The report's tables for one data set (`data_set_section`), from its results records alone.

The per-arm table (every training run the experiments used: steps reached, accuracies, how far
the first layer moved, converged or not), the claims with both views and the reference each
verdict used, the linear CNN's theory checks, the formula fits and the trajectories.
`validation.report` assembles them into REPORT.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from validation.cells import Cell, Records, format_stat, runs_of
from validation.claims import DOES_NOT, PARTLY, REPRODUCES, Claim, verdict


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return format_stat(value, 3)
    return format(value, spec)


def data_line(records: Records) -> str:
    """'builtin (2000 train images, padded 2 px)' for one data set's records."""
    data = next(iter(records.values()))["data"]
    pad = f", padded by {data['pad']} px each side (channel mean: 0 after normalisation)" if data.get("pad") else ""
    paper = f"; the paper's {data['paper_dataset']}" if data.get("paper_dataset") else ""
    return f"{data['spec']} ({data['train_images']} train images{pad}{paper})"


def setup_section(results: dict[str, Records]) -> list[str]:
    """Paper's training setting against this run's (older records without a stopping rule included)."""
    first = next(iter(next(iter(results.values())).values()))
    c = first["config"]
    momentum = c.get("momentum", 0.0)
    optimiser = f"SGD, lr {c['lr']:g}, " + (f"momentum {momentum:g}" if momentum else "no momentum")
    if c.get("momentum_arms"):
        optimiser += "; momentum " + ", ".join(f"{m:g}" for m in c["momentum_arms"]) + " only in its own labelled arm"
    if "max_epochs" in c:
        length = (f"until train accuracy >= {c['true_target_acc']:g} (true labels) / >= {c['random_target_acc']:g} "
                  f"(random labels), at most {c['max_epochs']} epochs; else not converged")
    else:
        length = f"{c.get('epochs')} epochs"
    images = "; ".join(f"{slug}: {next(iter(r.values()))['data']['train_images']}" for slug, r in results.items())
    return [
        "| setting | paper (PAPER.md section 4) | ours |",
        "|---|---|---|",
        f"| optimiser | plain SGD, lr 0.01 | {optimiser} |",
        f"| batch size | 256 | {c['batch_size']} |",
        f"| training length | 30-100 epochs | {length} |",
        f"| training images | 50,000 (CIFAR-10) | {images} |",
        "| PCA images | 10,000 | the same training images the networks saw (padded too; exact second moment) |",
        f"| network, first-layer widths | VGG11, 64 | {_vgg_name(c)} {c['vgg_width']} and {c['vgg_wide_width']}, "
        f"ResNet20 {c['resnet_width']} |",
        f"| seeds | 3 | {len(c['seeds'])} ({', '.join(map(str, c['seeds']))}) |",
    ]


def arm_table(runs: list[dict[str, Any]]) -> list[str]:
    """One row per arm: settings, seeds, steps reached, accuracies, displacement, converged."""
    if not runs:
        return []
    arms: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        arms.setdefault(run["arm"], []).append(run)

    def stat(group: list[dict[str, Any]], key: str, spec: str = ".3f") -> str:
        values = np.array([np.nan if r.get(key) is None else float(r[key]) for r in group])
        finite = values[np.isfinite(values)]
        return "-" if finite.size == 0 else f"{finite.mean():{spec}} +- {finite.std():{spec}}"

    lines = ["| arm | arch | width | labels | lr | optimiser | seeds | steps reached | train acc. | test acc. | "
             "‖W-W0‖/‖W0‖ | target | converged |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, group in arms.items():
        a = group[0]
        target = f"{a['fixed_epochs']} epochs" if a.get("fixed_epochs") else format(a["target"], "g")
        missed = [r for r in group if not r.get("converged", True)]
        converged = "yes" if not missed else f"no ({len(missed)} of {len(group)} runs)"
        lines.append(
            f"| {key} | {a['arch']}{' (frozen first layer)' if a.get('frozen') else ''} | {a['width']} | {a['labels']} | "
            f"{a['lr']:g} | {a['optimiser']} | {', '.join(str(r['seed']) for r in group)} | "
            f"{', '.join(str(r['steps']) for r in group)} | {stat(group, 'train_accuracy')} | "
            f"{stat(group, 'test_accuracy')} | {stat(group, 'displacement', '.3g')} | "
            f"{target} | {converged} |")
    return lines


def claims_detail(cells: list[tuple[Claim, Cell]]) -> list[str]:
    """Both views and the published number each verdict was judged against."""
    lines = ["| claim | ours, first view | ours, second view | judged against | verdict |", "|---|---|---|---|---|"]
    for claim, cell in cells:
        if cell.ours is None and not cell.note:
            continue
        first = f"{claim.views[0]}: {format_stat(cell.ours)}" if cell.ours else "-"
        second = f"{claim.views[1]}: {format_stat(cell.raw)}" if cell.raw else "-"
        ref = "-" if cell.reference is None else f"{cell.reference.text} ({cell.reference.dataset})"
        shown = cell.verdict + (f" ({cell.note})" if cell.note else "")
        lines.append(f"| {claim.claim} | {first} | {second} | {ref} | {shown} |")
    return lines


def linear_rows(records: Records) -> list[tuple[str, str, str, str]]:
    """(check, rule, ours, verdict) for the linear CNN (random labels, the theory's setting)."""
    if "linear_cnn" not in records:
        return []
    r = records["linear_cnn"]["results"]["random"]
    rows = []
    err = r["simulate_vs_train"]["max_rel_error_of_change"]
    e = err["mean"]
    rows.append(("`simulate` = full-batch training, max relative error of W(t) - W(0)",
                 "<= 1e-6 reproduces, <= 1e-3 partly", f"{e:.2e} (max over seeds {max(v for v in err['values'] if v is not None):.2e})",
                 REPRODUCES if e <= 1e-6 else PARTLY if e <= 1e-3 else DOES_NOT))
    best = r["best_fit_correlation"]
    rows.append(("formula fits the exact profile (best fit correlation along steps)", "correlation rules",
                 format_stat(best, 3), verdict(best["mean"], 1.0, None)))
    last_a = r["last"]["corr_inv_sqrt_A_eigenvalues"]
    rows.append(("whitening limit in the eigenbasis of A (the exact model's own moments)", "correlation rules vs 1",
                 format_stat(last_a, 3), verdict(last_a["mean"], 1.0, None)))
    pooled = r["seeds_pooled"][-1]["corr_inv_sqrt_patch_eigenvalues"]
    rows.append(("whitening, seeds pooled into one bank (expectation over label draws)", "correlation rules vs 1",
                 f"{pooled:.3f}", verdict(pooled, 1.0, None)))
    inputs = records["linear_cnn"]["results"]["input_autocorrelation"]
    for lag, stat in r["last_autocorrelation"].items():
        v, first = stat["mean"], r["first_autocorrelation"][lag]["mean"]
        rows.append((f"output autocorrelation at {lag} px falls toward 0 (step 1 -> last step; images: {inputs[lag]:.2f})",
                     "|r| <= 0.1 reproduces, below half the step-1 value partly", f"{first:.3f} -> {format_stat(stat, 3)}",
                     REPRODUCES if abs(v) <= 0.1 else PARTLY if abs(v) < 0.5 * abs(first) else DOES_NOT))
    return rows


def _fits(f: dict[str, Any]) -> list[str]:
    lines = ["### Formula fits", "", "| network | init-subtracted fit (tau) | raw two-parameter fit |", "|---|---|---|"]
    models = [k for k, v in f.items() if isinstance(v, dict) and "raw" in v and "init_subtracted" in v and k != "random_init"]
    for arch in models:  # every network the experiment fitted (the momentum arms and the second width too)
        converged = "" if f[arch].get("converged", True) else " (not converged)"
        lines.append(f"| {arch}{converged} | {format_stat(f[arch]['init_subtracted']['correlation'])} "
                     f"(tau {_num(f[arch]['init_subtracted']['tau']['mean'])}) | {format_stat(f[arch]['raw']['correlation'])} |")
    ri = f.get("random_init")
    if ri is not None:
        lines.append(f"| random initialisation | {format_stat(ri['one_parameter']['correlation'])} (one parameter) | "
                     f"{format_stat(ri['raw']['correlation'])} |")
    return lines + [""]


def _trajectories(t: dict[str, Any]) -> list[str]:
    lines = ["### Trajectories: fit and tau along training, and what the end tau goes with", "",
             "| arm (VGG11) | lr | end fit correlation | end tau | min fit corr along training | "
             "end ‖W-W0‖/‖W0‖ | slope of log tau vs log step | slope of log tau vs log displacement |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in t["per_arm"].items():
        lines.append(f"| {name} | {t['arms'][name]['lr']:g} | {format_stat(a['end_correlation'], 3)} | "
                     f"{_num(a['end_tau']['mean'])} +- {_num(a['end_tau']['std'])} | {format_stat(a['min_correlation'], 3)} | "
                     f"{_num(a['end_displacement']['mean'])} | {format_stat(a['tau_vs_steps_loglog_slope'])} | "
                     f"{format_stat(a['tau_vs_displacement_loglog_slope'])} |")
    pooled, near = t["pooled_correlation_of_log_tau_with"], t["random_vs_true_at_nearest_tau"]
    return lines + [
        "",
        f"- End tau, true over random labels: {_num(t['end_tau_ratio_true_over_random'])}x."
        + "".join(f" End tau at lr {k} over lr x1: {_num(v)}." for k, v in t["end_tau_ratio_vs_lr"].items()),
        f"- Over all snapshots of all arms, log tau correlates with log displacement ‖W-W0‖/‖W0‖ at "
        f"{pooled['log_displacement']:.2f}, with log step at {pooled['log_steps']:.2f}, with the recent training loss at "
        f"{pooled['recent_loss']:.2f}.",
        f"- Each random-label snapshot against the true-label snapshot (same seed) of the nearest tau: similarity "
        f"{format_stat(near['similarity'])}, |log tau gap| {format_stat(near['abs_log_tau_gap'])}.",
        "",
    ]


def _steps_cell(reach: dict[str, Any], ratio: float | None) -> str:
    """'84 +- 8 (x0.62)' steps to a threshold, with the ratio to the default init; 'not reached' / 'k of n'."""
    if reach["reached"] == 0:
        return "not reached"
    steps = reach["steps"]
    text = f"{steps['mean']:.0f} +- {steps['std']:.0f}"
    if reach["reached"] < reach["of"]:
        text += f" ({reach['reached']} of {reach['of']})"
    return text + (f" (x{ratio:.2f})" if ratio is not None else "")


def _inits(results: dict[str, Any]) -> list[str]:
    """The experiment `init`: one table per architecture, one row per first-layer initialiser."""
    lines = ["### First-layer initialisers (experiment `init`)", "",
             f"Each initialiser trains for a fixed number of epochs (plain SGD, the paper's optimiser; test accuracy every "
             f"{results['test_every']} epochs). Steps to a threshold: the first epoch end whose train accuracy (over that epoch) "
             "reaches it, or the first test evaluation that does; mean +- std over seeds, (x r) the ratio to the default "
             "initialisation. tau and correlation: the formula's one-parameter fit to the *raw* first-layer profile (where "
             "the layer is), at step 0 and at the end; 'similarity to start': the raw profile at the end against the one "
             "it started from.", ""]
    for arm in results["archs"].values():
        keys = [f"train {t:g}" for t in results["train_thresholds"]] + [f"test {t:g}" for t in results["test_thresholds"]]
        lines += [f"**{arm['arch']} width {arm['width']}, {arm['epochs']} epochs**", "",
                  "| initialiser | " + " | ".join(f"steps to {k} acc." for k in keys)
                  + " | final train acc. | final test acc. | tau: start -> end | fit corr.: start -> end | ‖W-W0‖/‖W0‖ "
                  "| similarity to start |",
                  "|---|" + "---|" * (len(keys) + 6)]
        for name, a in arm["per_init"].items():
            ratios = a.get("steps_ratio_to_default", {})
            cells = [_steps_cell(a["reach"][k], None if name == "default" else ratios.get(k)) for k in keys]
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {format_stat(a['train_accuracy'], 3)} | {format_stat(a['test_accuracy'], 3)} | "
                f"{_num(a['start']['tau']['mean'])} -> {_num(a['end']['tau']['mean'])} | "
                f"{_num(a['start']['correlation']['mean'], '.3f')} -> {_num(a['end']['correlation']['mean'], '.3f')} | "
                f"{_num(a['end']['displacement']['mean'])} | {_num(a['end']['similarity_to_start']['mean'], '.3f')} |")
        lines.append("")
    return lines


def _highest_reached(arm: dict[str, Any], split: str, thresholds: list[float]) -> str | None:
    """The key of the highest `split` threshold that every seed of the default initialiser reached."""
    default = arm["per_init"].get("default") or next(iter(arm["per_init"].values()))
    reached = [t for t in thresholds if default["reach"][f"{split} {t:g}"]["reached"] == default["reach"][f"{split} {t:g}"]["of"]]
    return f"{split} {max(reached):g}" if reached else None


def init_summary(own: dict[str, Any], figures_dir: str) -> list[str]:
    """The README's lines on the experiment `init`: per data set and network, each initialiser's steps
    to the highest train / test accuracy the default initialisation reached (ratio to it), its final
    test accuracy and its first layer's fitted tau from start to end; then the figures of the first data set."""
    first = next(r["init"] for r in own.values() if "init" in r)
    lines = ["### First-layer initialisers (`linearcnn train --first-layer-init`, experiment `init`)", "",
             f"Reproduce: `{first.get('command') or 'linearcnn validate --only init'}`. Every initialiser trains the same "
             f"epochs with plain SGD (lr {first['config']['lr']:g}, batch {first['config']['batch_size']}); steps until the "
             "train (test) accuracy first reaches the highest "
             "threshold the default initialisation reached in every seed, mean +- std over 3 seeds, (x r) relative to the "
             "default; tau: the formula fitted to the raw first-layer profile, at step 0 and at the end. Details: "
             "[`validation/REPORT.md`](validation/REPORT.md).", "",
             "| data | network | initialiser | steps to train acc. | steps to test acc. | final test acc. | tau: start -> end |",
             "|---|---|---|---|---|---|---|"]
    figures: list[str] = []
    for slug, records in own.items():
        if "init" not in records:
            continue
        results = records["init"]["results"]
        for arm in results["archs"].values():
            keys = [_highest_reached(arm, "train", results["train_thresholds"]),
                    _highest_reached(arm, "test", results["test_thresholds"])]
            for name, a in arm["per_init"].items():
                ratios = a.get("steps_ratio_to_default", {})
                cells = [f"{k.split()[1]}: {_steps_cell(a['reach'][k], None if name == 'default' else ratios.get(k))}"
                         if k else "-" for k in keys]
                lines.append(f"| {slug} | {arm['arch']} w{arm['width']}, {arm['epochs']} epochs | {name} | {cells[0]} | {cells[1]} | "
                             f"{format_stat(a['test_accuracy'], 3)} | {_num(a['start']['tau']['mean'])} -> "
                             f"{_num(a['end']['tau']['mean'])} |")
        if not figures:
            figures = list(records["init"]["results"].get("figures", []))
            figures = [f if "/" in f else f"{slug}/{f}" for f in figures]
    lines.append("")
    for figure in figures:
        lines += [f"![{Path(figure).name}]({figures_dir}/{figure})", ""]
    return lines


def _external(ext: dict[str, Any]) -> list[str]:
    lines = ["### External checkpoints", ""]
    if ext.get("skipped"):
        return lines + [f"Skipped: {ext.get('note')}.", ""]
    for r in ext["checkpoints"]:
        lines.append(f"- `{r['path']}` ({r['format']}, layer {r['layer']}, {r['shape']}): raw fit "
                     f"{r['raw_fit_correlation']:.3f}, init-subtracted fit {_num(r['init_subtracted_fit_correlation'])}")
    return lines + [""]


def data_set_section(records: Records, cells: list[tuple[Claim, Cell]]) -> list[str]:
    """Everything the report shows about one data set (records of experiments that did not fail)."""
    lines: list[str] = []
    arms = arm_table(runs_of(records))
    if arms:
        lines += ["### Training runs (per arm)", "",
                  "Steps reached per seed; accuracies and ‖W-W0‖/‖W0‖ (first layer, at the end) as mean +- std over "
                  "seeds. A run that missed its target within the epoch cap is not converged and counts toward no verdict.",
                  "", *arms, ""]
    lines += ["### Claims, both views", "", *claims_detail(cells), ""]
    lin = linear_rows(records)
    if lin:
        true = records["linear_cnn"]["results"]["true"]
        lines += ["### The linear CNN (PAPER.md sections 2-3; random labels, exact full-batch GD)", "",
                  "| check | rule | ours | verdict |", "|---|---|---|---|",
                  *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in lin), "",
                  f"True labels (parity of the class): best fit correlation {format_stat(true['best_fit_correlation'], 3)}, "
                  f"last-step corr with 1/sqrt(eigenvalue) {format_stat(true['last']['corr_inv_sqrt_patch_eigenvalues'], 3)}.",
                  ""]
    if "formula_fit" in records:
        lines += _fits(records["formula_fit"]["results"])
    if "trajectories" in records:
        lines += _trajectories(records["trajectories"]["results"])
    if "external" in records:
        lines += _external(records["external"]["results"])
    if "init" in records:
        lines += _inits(records["init"]["results"])
    return lines


def _vgg_name(config: dict[str, Any]) -> str:
    """How the report names the VGG the experiments trained (results before `vgg_arch` trained VGG11)."""
    arch = config.get("vgg_arch", "vgg11")
    return "VGG11 with batch norm" if arch == "vgg11-bn" else "VGG11"

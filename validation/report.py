"""`REPORT.md` and the README's results block, from the results JSON alone: one row per published
number (`validation.claims.CLAIMS`) with its verdict (`validation.claims.verdict`, rules stated in
the report too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linearcnn._files import atomic_write_text
from validation.claims import (
    CLAIMS,
    DOES_NOT,
    NOT_MEASURED,
    PARTLY,
    REPRODUCES,
    Claim,
    correlation_band,
    verdict,
)

# -------------------------------------------------------------------------------------------------
# reading the results


def load_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{experiment: record} for every `*.json` in `results_dir`."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        out[record.get("experiment", path.stem)] = record
    return out


def _lookup(results: dict[str, dict[str, Any]], path: Sequence[str] | None) -> Any:
    if path is None or path[0] not in results:
        return None
    node: Any = results[path[0]]["results"]
    for key in path[1:]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def format_stat(stat: Any, digits: int = 2) -> str:
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f} (n={stat['n']})"


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return format_stat(value, 3)
    return format(value, spec)


@dataclass
class Row:
    claim: Claim
    ours: dict[str, Any] | None
    ours_raw: dict[str, Any] | None
    verdict: str


def claim_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """One row per claim: our measurement (both views where they exist) and the verdict."""
    rows = []
    for claim in CLAIMS:
        ours = _lookup(results, claim.source)
        raw = _lookup(results, claim.raw_source)
        mean = ours.get("mean") if isinstance(ours, dict) else None
        text = verdict(mean, claim.paper, claim.spread, kind=claim.kind) if claim.source else NOT_MEASURED
        rows.append(Row(claim, ours if isinstance(ours, dict) else None, raw if isinstance(raw, dict) else None, text))
    return rows


def context_line(record: dict[str, Any]) -> str:
    data = record["data"]
    return f"{data['spec']} ({data['train_images']} train images), {record['device']}"


# -------------------------------------------------------------------------------------------------
# the linear-CNN theory checks


def linear_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(check, rule, ours, verdict) for the linear CNN (random labels, the theory's setting)."""
    if "linear_cnn" not in results:
        return []
    r = results["linear_cnn"]["results"]["random"]
    rows = []
    err = r["simulate_vs_train"]["max_rel_error_of_change"]
    e = err["mean"]
    rows.append(("`simulate` = full-batch training, max relative error of W(t) - W(0)",
                 "<= 1e-6 reproduces, <= 1e-3 partly", f"{e:.2e} (max over seeds {max(v for v in err['values'] if v is not None):.2e})",
                 REPRODUCES if e <= 1e-6 else PARTLY if e <= 1e-3 else DOES_NOT))
    best = r["best_fit_correlation"]
    rows.append(("formula fits the exact profile (best fit correlation along steps)", "correlation rules",
                 format_stat(best, 3), verdict(best["mean"], 1.0, None)))
    last = r["last"]["corr_inv_sqrt_patch_eigenvalues"]
    rows.append(("whitening limit: corr(profile, 1/sqrt(patch eigenvalue)) at the last step", "correlation rules vs 1",
                 format_stat(last, 3), verdict(last["mean"], 1.0, None)))
    last_a = r["last"]["corr_inv_sqrt_A_eigenvalues"]
    rows.append(("whitening limit in the eigenbasis of A (the exact model's own moments)", "correlation rules vs 1",
                 format_stat(last_a, 3), verdict(last_a["mean"], 1.0, None)))
    pooled = r["seeds_pooled"][-1]["corr_inv_sqrt_patch_eigenvalues"]
    rows.append(("the same, seeds pooled into one bank (expectation over label draws)", "correlation rules vs 1",
                 f"{pooled:.3f}", verdict(pooled, 1.0, None)))
    lag1 = r["last_autocorrelation"]
    first = r["first_autocorrelation"]
    inputs = results["linear_cnn"]["results"]["input_autocorrelation"]
    for lag, stat in lag1.items():
        v = stat["mean"]
        rows.append((f"output autocorrelation at {lag} px falls toward 0 (step 1 -> last step; images: {inputs[lag]:.2f})",
                     "|r| <= 0.1 reproduces, below half the step-1 value partly",
                     f"{first[lag]['mean']:.3f} -> {format_stat(stat, 3)}",
                     REPRODUCES if abs(v) <= 0.1 else PARTLY if abs(v) < 0.5 * abs(first[lag]["mean"]) else DOES_NOT))
    return rows


# -------------------------------------------------------------------------------------------------
# rendering


def _discussion(rows: list[Row], results: dict[str, dict[str, Any]]) -> list[str]:
    """One factual line per claim that does not reproduce, grouped by claim."""
    lines = []
    seen = set()
    for row in rows:
        if row.verdict in (REPRODUCES, NOT_MEASURED) or row.ours is None:
            continue
        key = row.claim.claim
        group = [r for r in rows if r.claim.claim == key and r.verdict not in (REPRODUCES, NOT_MEASURED)]
        if key in seen:
            continue
        seen.add(key)
        mean = row.ours["mean"]
        papers = ", ".join(f"{r.claim.dataset} {r.claim.paper_text}" for r in group)
        views = row.claim.views
        text = f"- **{key}**: ours {mean:.3f} +- {row.ours['std']:.3f} ({views[0]})"
        if row.ours_raw is not None and row.ours_raw.get("mean") is not None:
            text += f", {row.ours_raw['mean']:.2f} +- {row.ours_raw['std']:.2f} ({views[1]})"
        text += f"; paper {papers}. "
        if row.claim.kind == "accuracy_gap":
            fr = results["frozen"]["results"]
            text += (f"Test accuracy learned {format_stat(fr['learned']['test_accuracy'], 3)}, frozen "
                     f"{format_stat(fr['frozen']['test_accuracy'], 3)}; train accuracy learned "
                     f"{format_stat(fr['learned']['train_accuracy'], 3)}, frozen {format_stat(fr['frozen']['train_accuracy'], 3)}.")
        else:
            papers_by_set = [(r.claim.paper, r.claim.dataset) for r in group if r.claim.paper is not None]
            text += (f"Difference from the paper: {', '.join(f'{mean - paper:+.2f} ({data})' for paper, data in papers_by_set)}; "
                     f"band ours: {correlation_band(mean)}, paper: {correlation_band(papers_by_set[0][0])}.")
        lines.append(text)
    return lines


def _setup_section(any_record: dict[str, Any]) -> list[str]:
    c = any_record["config"]
    lines = [
        "| setting | paper (PAPER.md section 4) | ours |",
        "|---|---|---|",
        f"| optimiser | plain SGD, lr 0.01 | SGD, lr {c['lr']:g}, momentum {c['momentum']:g} |",
        f"| batch size | 256 | {c['batch_size']} |",
        f"| epochs | 30-100 | {c['epochs']} |",
        f"| training images | 50,000 (CIFAR-10) | {any_record['data']['train_images']} ({any_record['data']['spec']}) |",
        f"| PCA images | 10,000 | the same {any_record['data']['train_images']} training images (exact second moment) |",
        f"| first-layer widths | 64 (VGG11) | VGG11 {c['vgg_width']} and {c['vgg_wide_width']}, ResNet20 {c['resnet_width']} |",
        f"| seeds | 3 | {len(c['seeds'])} ({', '.join(map(str, c['seeds']))}) |",
    ]
    return lines


def _further(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    if "formula_fit" in results:
        f = results["formula_fit"]["results"]
        lines += ["### Formula fits", "", "| network | init-subtracted fit (tau) | raw two-parameter fit |", "|---|---|---|"]
        for arch in ("vgg11", "resnet20"):
            if arch in f:
                lines.append(f"| {arch} | {format_stat(f[arch]['init_subtracted']['correlation'])} "
                             f"(tau {_num(f[arch]['init_subtracted']['tau']['mean'])}) | "
                             f"{format_stat(f[arch]['raw']['correlation'])} |")
        ri = f["random_init"]
        lines.append(f"| random initialisation | {format_stat(ri['one_parameter']['correlation'])} (one parameter) | "
                     f"{format_stat(ri['raw']['correlation'])} |")
        lines.append("")
    if "trajectories" in results:
        t = results["trajectories"]["results"]
        lines += ["### Trajectories: fit and tau along training, and what the end tau goes with", "",
                  "| arm (VGG11) | lr | end fit correlation | end tau | min fit corr along training | "
                  "end ‖W-W0‖/‖W0‖ | slope of log tau vs log step | slope of log tau vs log displacement |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, a in t["per_arm"].items():
            lines.append(f"| {name} | {t['arms'][name]['lr']:g} | {format_stat(a['end_correlation'], 3)} | "
                         f"{_num(a['end_tau']['mean'])} +- {_num(a['end_tau']['std'])} | {format_stat(a['min_correlation'], 3)} | "
                         f"{_num(a['end_displacement']['mean'])} | {format_stat(a['tau_vs_steps_loglog_slope'])} | "
                         f"{format_stat(a['tau_vs_displacement_loglog_slope'])} |")
        pooled = t["pooled_correlation_of_log_tau_with"]
        near = t["random_vs_true_at_nearest_tau"]
        lines += [
            "",
            f"- End tau, true over random labels: {_num(t['end_tau_ratio_true_over_random'])}x. "
            + "; ".join(f"end tau at lr {k} over lr x1: {_num(v)}" for k, v in t["end_tau_ratio_vs_lr"].items()) + ".",
            f"- Over all snapshots of all arms, log tau correlates with log displacement ‖W-W0‖/‖W0‖ at "
            f"{pooled['log_displacement']:.2f}, with log step at {pooled['log_steps']:.2f}, with the recent training loss at "
            f"{pooled['recent_loss']:.2f}.",
            f"- Each random-label snapshot against the true-label snapshot (same seed) of the nearest tau: similarity "
            f"{format_stat(near['similarity'])}, |log tau gap| {format_stat(near['abs_log_tau_gap'])}.",
            "",
        ]
    return lines


def render_report(results: dict[str, dict[str, Any]], *, figures_dir: str | Path = "figures",
                  report_dir: str | Path = "validation") -> str:
    """The whole REPORT.md as text, from the results records alone (figure links relative to `report_dir`)."""
    if not results:
        return "# Validation report\n\nNo results yet: run `linearcnn validate`.\n"
    first = next(iter(results.values()))
    config = first["config"]["name"]
    devices = sorted({r["device"] for r in results.values()})
    on_cpu = all(d.startswith("cpu") for d in devices)
    wall = sum(r.get("wall_seconds", 0.0) for r in results.values())
    command = first.get("command") or f"linearcnn validate --config {config}"
    failed = {n: r for n, r in results.items() if "error" in r["results"]}
    results = {n: r for n, r in results.items() if n not in failed}
    rows = claim_rows(results)
    lines = [
        "# Validation report",
        "",
        "Generated by `validation/report.py` from `validation/results/*.json`; do not edit by hand.",
        "",
        f"- **Configuration**: `{config}`" + (" — **CPU, scaled down**; the GPU run (`--config gpu`) is pending." if on_cpu else ""),
        f"- **Data**: {context_line(first)}. {first['data'].get('description', '')}",
        f"- **Device**: {', '.join(devices)}; torch {first['versions'].get('torch')}, linearcnn {first['versions'].get('linearcnn')}",
        f"- **Seeds**: {', '.join(map(str, first['seeds']))}; every number is mean +- std over seeds (or seed pairs).",
        f"- **Reproduce**: `{command}` (wall time of the experiments: {wall / 60:.1f} min)",
        f"- **Experiments in these results**: {', '.join(results)}",
        *(["- **Failed experiments**: " + "; ".join(f"{n}: {r['results']['error']}" for n, r in failed.items())] if failed else []),
        "",
        "## Claims of PAPER.md section 4",
        "",
        f"Our data are `{first['data']['spec']}` for every row: each of the paper's data-set columns is compared "
        "with the same measurement on these data, not with CIFAR-10/100 or CelebA. "
        "Profiles: init-subtracted (the authors' code's default; the verdict uses it) and raw (the paper's definition).",
        "",
        "| claim | paper's data | paper | ours, init-subtracted | ours, raw | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = row.claim
        ours = format_stat(row.ours) if row.ours else ("-" if not c.reason else f"not measured: {c.reason}")
        if c.kind == "accuracy_gap" and row.ours:
            ours = f"test acc. frozen - learned: {format_stat(row.ours, 3)}"
        raw = format_stat(row.ours_raw) if row.ours_raw else "-"
        if c.views != Claim.views and row.ours and c.kind != "accuracy_gap":
            ours, raw = f"{c.views[0]}: {ours}", (f"{c.views[1]}: {raw}" if row.ours_raw else raw)
        lines.append(f"| {c.claim} | {c.dataset} | {c.paper_text} | {ours} | {raw} | {row.verdict} |")
    counts = {v: sum(r.verdict == v for r in rows) for v in (REPRODUCES, PARTLY, DOES_NOT, NOT_MEASURED)}
    lines += [
        "",
        "Verdict rules: correlations **reproduce** when |ours - paper| <= max(0.05, paper's +- spread); "
        "**partly** when not, but both lie in the same band (high >= 0.7, moderate 0.3-0.7, near zero |r| < 0.3, "
        "negative <= -0.3); otherwise **does not**. Frozen first layer: |test accuracy gap| <= 0.02 reproduces, "
        "<= 0.05 partly. The verdict uses our mean over seeds.",
        "",
        "Tally: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".",
        "",
    ]
    lin = linear_rows(results)
    if lin:
        lines += ["## The linear CNN (PAPER.md sections 2-3; random labels, exact full-batch GD)", "",
                  "| check | rule | ours | verdict |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in lin]
        lr = results["linear_cnn"]["results"]
        true = lr["true"]
        lines += ["", f"True labels (parity of the class): best fit correlation {format_stat(true['best_fit_correlation'], 3)}, "
                      f"last-step corr with 1/sqrt(eigenvalue) {format_stat(true['last']['corr_inv_sqrt_patch_eigenvalues'], 3)}, "
                      f"simulate vs train max relative error {true['simulate_vs_train']['max_rel_error_of_change']['mean']:.2e}.",
                  ""]
    lines += ["## Deviations", ""]
    lines += _discussion(rows, results) or ["None."]
    lines += ["", "## Setting: paper vs this run", ""] + _setup_section(first) + [""]
    further = _further(results)
    if further:
        lines += ["", "## Further measurements", ""] + further
    if "external" in results:
        ext = results["external"]["results"]
        lines += ["## External checkpoints", ""]
        if ext.get("skipped"):
            lines.append(f"Skipped: {ext.get('note')}.")
        else:
            for r in ext["checkpoints"]:
                lines.append(f"- `{r['path']}` ({r['format']}, layer {r['layer']}, {r['shape']}): raw fit "
                             f"{r['raw_fit_correlation']:.3f}, init-subtracted fit {_num(r['init_subtracted_fit_correlation'])}")
        lines.append("")
    figures = [f for r in results.values() for f in r["results"].get("figures", [])]
    if figures:
        rel = Path(os.path.relpath(Path(figures_dir).resolve(), Path(report_dir).resolve()))
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{f}]({(rel / f).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: str | Path, report_path: str | Path, *, figures_dir: str | Path = "figures") -> Path:
    """Render the report from the JSON in `results_dir` and write it atomically."""
    text = render_report(load_results(results_dir), figures_dir=figures_dir, report_dir=Path(report_path).parent)
    return atomic_write_text(report_path, text)


# ---------------------------------------------------------------------------------------------
# The README's results section (generated from the same JSON; tests/test_validation_smoke.py
# fails when the README's copy is stale)

README_START = "<!-- results:start (generated by `python -m validation.report --readme README.md`; do not edit) -->"
README_END = "<!-- results:end -->"
README_FIGURES = ("formula_fit_vgg11.png", "true_vs_random.png", "trajectories.png")


def render_readme_results(results: dict[str, dict[str, Any]], *, figures_dir: str = "figures") -> str:
    """The README's headline: one row per claim (the paper's data sets merged), the tally, the
    command that reproduces it, and the main figures; between README_START and README_END."""
    results = {n: r for n, r in results.items() if "error" not in r["results"]}
    if not results:
        return f"{README_START}\nNo validation results yet: run `linearcnn validate`.\n{README_END}"
    first = next(iter(results.values()))
    devices = sorted({r["device"] for r in results.values()})
    on_cpu = all(d.startswith("cpu") for d in devices)
    wall = sum(r.get("wall_seconds", 0.0) for r in results.values())
    rows = claim_rows(results)
    merged: dict[str, list[Row]] = {}
    for row in rows:
        merged.setdefault(row.claim.claim, []).append(row)
    lines = [
        README_START,
        f"Configuration `{first['config']['name']}`" + (" (CPU, scaled down; the GPU run is pending)" if on_cpu else "")
        + f", data {context_line(first)}, seeds {', '.join(map(str, first['seeds']))}. Reproduce: "
        f"`{first.get('command') or 'linearcnn validate'}` ({wall / 60:.1f} min). Every row, the rules and the "
        "deviations: [`validation/REPORT.md`](validation/REPORT.md).",
        "",
        "| claim | paper (data) | ours, init-subtracted (mean +- std over seeds) | verdict |",
        "|---|---|---|---|",
    ]
    for name, group in merged.items():
        head = group[0]
        paper = "; ".join(f"{r.claim.paper_text} ({r.claim.dataset})" for r in group)
        if head.ours is None:
            ours = f"not measured: {head.claim.reason}" if head.claim.reason else "-"
        elif head.claim.kind == "accuracy_gap":
            ours = f"test accuracy frozen - learned: {format_stat(head.ours, 3)}"
        else:
            ours = format_stat(head.ours)
        verdicts = [r.verdict for r in group]
        if len(set(verdicts)) == 1:
            verdict_text = verdicts[0]
        else:
            verdict_text = "; ".join(f"{r.verdict} ({r.claim.dataset})" for r in group)
        lines.append(f"| {name} | {paper} | {ours} | {verdict_text} |")
    counts = {v: sum(r.verdict == v for r in rows) for v in (REPRODUCES, PARTLY, DOES_NOT, NOT_MEASURED)}
    lines += ["", "Tally over the report's rows: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
    produced = {f for r in results.values() for f in r["results"].get("figures", [])}
    for figure in README_FIGURES:
        if figure in produced:
            lines += [f"![{figure}]({figures_dir}/{figure})", ""]
    lines.append(README_END)
    return "\n".join(lines)


def readme_results_block(readme_text: str) -> str:
    """The generated block currently in a README's text ("" when it has none)."""
    start, end = readme_text.find(README_START), readme_text.find(README_END)
    if start < 0 or end < start:
        return ""
    return readme_text[start : end + len(README_END)]


def update_readme(readme_path: str | Path, results_dir: str | Path) -> bool:
    """Replace the README's generated results block with one rendered from `results_dir`; True if it changed."""
    path = Path(readme_path)
    text = path.read_text()
    old = readme_results_block(text)
    if not old:
        raise SystemExit(f"{path}: no block between {README_START!r} and {README_END!r}")
    new = render_readme_results(load_results(results_dir))
    if new == old:
        return False
    atomic_write_text(path, text.replace(old, new))
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m validation.report [--results DIR] [--report FILE] [--readme README.md]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate REPORT.md (and the README's results block) from the JSON.")
    parser.add_argument("--results", default="validation/results")
    parser.add_argument("--report", default="validation/REPORT.md")
    parser.add_argument("--figures", default="figures")
    parser.add_argument("--readme", default=None, help="also rewrite this README's generated results block")
    args = parser.parse_args(argv)
    write_report(args.results, args.report, figures_dir=args.figures)
    print(f"wrote {args.report}")
    if args.readme:
        changed = update_readme(args.readme, args.results)
        print(f"{'rewrote' if changed else 'unchanged:'} the results block of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

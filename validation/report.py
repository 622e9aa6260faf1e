"""`REPORT.md` and the README's results block, from the results JSON alone.

One row per claim (`validation.claims.CLAIMS`), one column per data set measured, and the paper's
numbers each with its own data set. A (claim, data set) cell is a verdict (`claims.verdict`), "not
converged" (a training run behind it missed its target: no verdict), or "not measured". The tally
counts the (claim, data set) pairs that got a verdict. Per data set, `validation.tables` renders
the per-arm table, the theory checks and the further measurements.

    python -m validation.report [--results DIR] [--report FILE] [--figures DIR] [--readme README.md]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from linearcnn._files import atomic_write_text
from validation import tables
from validation.cells import Cell, Records, claim_cells, claims_table, format_stat, ok, runs_of, tally, tally_line
from validation.claims import VERDICTS, Claim, correlation_band
from validation.deviations import explained

# -------------------------------------------------------------------------------------------------
# reading the results


def record_slug(record: dict[str, Any]) -> str:
    """The data slug of a results record (derived from its data spec in records that predate slugs)."""
    from validation.runs import data_slug

    data = record.get("data", {})
    return str(data.get("slug") or data_slug(data.get("spec", "builtin"), int(data.get("pad", 0))))


def load_results(results_dir: str | Path) -> dict[str, Records]:
    """{data slug: {experiment: record}} from `results_dir/<slug>/*.json`; a flat `results_dir/*.json`
    (one data set, the layout before several data sets) is read as the data set its records name."""
    root = Path(results_dir)
    out: dict[str, Records] = {}
    for path in sorted(root.glob("*.json")):
        record = json.loads(path.read_text())
        out.setdefault(record_slug(record), {})[record.get("experiment", path.stem)] = record
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            out.setdefault(folder.name, {})[record.get("experiment", path.stem)] = record
    return out


# -------------------------------------------------------------------------------------------------
# rendering


def _deviations(rows: list[tuple[Claim, dict[str, Cell]]], results: dict[str, Records]) -> list[str]:
    """One factual line per (claim, data set) that has a verdict other than "reproduces"."""
    lines = []
    for claim, by_data in rows:
        for slug, cell in by_data.items():
            if cell.verdict not in VERDICTS[1:] or cell.ours is None or cell.ours.get("mean") is None:
                continue
            mean = cell.ours["mean"]
            text = f"- **{claim.claim}** on `{slug}`: ours {mean:.3f} +- {cell.ours['std']:.3f} ({claim.views[0]})"
            if cell.raw is not None and cell.raw.get("mean") is not None:
                text += f", {cell.raw['mean']:.2f} +- {cell.raw['std']:.2f} ({claim.views[1]})"
            ref = cell.reference
            text += f"; paper {claim.paper_text}. "
            if claim.kind == "accuracy_gap":
                fr = results[slug]["frozen"]["results"]
                text += (f"Test accuracy learned {format_stat(fr['learned']['test_accuracy'], 3)}, frozen "
                         f"{format_stat(fr['frozen']['test_accuracy'], 3)}.")
            elif ref is not None and ref.value is not None:
                text += (f"Compared with {ref.dataset} {ref.text}: difference {mean - ref.value:+.2f}; band ours: "
                         f"{correlation_band(mean)}, paper: {correlation_band(ref.value)}.")
            lines.append(text)
    return lines


def split_suite(results: dict[str, Records]) -> tuple[dict[str, Records], dict[str, Records]]:
    """(the paper's claims: the experiments `validate` runs by default, the others: `init`), per data set.

    Each part has its own invocation, command and time; the claims table and tally rest on the first."""
    from validation.experiments import DEFAULT_EXPERIMENTS

    suite = {slug: {n: r for n, r in records.items() if n in DEFAULT_EXPERIMENTS} for slug, records in results.items()}
    own = {slug: {n: r for n, r in records.items() if n not in DEFAULT_EXPERIMENTS} for slug, records in results.items()}
    return {k: v for k, v in suite.items() if v}, {k: v for k, v in own.items() if v}


def _own_lines(own: dict[str, Records]) -> list[str]:
    """One line per experiment outside the claims suite: what reproduces it and how long it took."""
    lines = []
    for name in sorted({n for records in own.values() for n in records}):
        records = {slug: {name: rs[name]} for slug, rs in own.items() if name in rs}
        first = next(iter(records.values()))[name]
        wall = sum(rs[name].get("wall_seconds", 0.0) for rs in records.values())
        lines.append(f"- **Experiment `{name}`** (data {', '.join(f'`{slug}`' for slug in records)}): reproduce "
                     f"`{first.get('command') or f'linearcnn validate --only {name}'}` (this invocation: {wall / 60:.1f} min"
                     f"{_training_time(records)})")
    return lines


def _training_time(results: dict[str, Records]) -> str:
    """'; training epochs of the N runs used: M min, ...' from the run records (runs trained by an
    earlier invocation are reused, so the invocation's own wall time leaves them out)."""
    runs = [r for records in results.values() for r in runs_of(ok(records))]
    seconds = sum(float(r.get("train_seconds") or 0.0) for r in runs)
    if not seconds:
        return ""
    return (f"; training epochs of the {len(runs)} deep-network runs it used: {seconds / 60:.0f} min, summed as each "
            "run was trained, runs already in the run folder being reused")


def _relative(figures_dir: str | Path, report_dir: str | Path) -> Path:
    """The figures folder as seen from the report's folder."""
    return Path(os.path.relpath(Path(figures_dir).resolve(), Path(report_dir).resolve()))


def _figure_links(results: dict[str, Records], figures_dir: str | Path, report_dir: str | Path) -> list[str]:
    rel = _relative(figures_dir, report_dir)
    lines = []
    for slug, records in results.items():
        figures = [f for r in ok(records).values() for f in r["results"].get("figures", [])]
        if figures:
            lines += [f"### `{slug}`", ""] + [line for f in figures for line in (f"![{f}]({(rel / f).as_posix()})", "")]
    return lines


def render_report(results: dict[str, Records], *, figures_dir: str | Path = "figures",
                  report_dir: str | Path = "validation") -> str:
    """The whole REPORT.md as text, from the results records alone (figure links relative to `report_dir`)."""
    results = {slug: records for slug, records in results.items() if records}
    if not results:
        return "# Validation report\n\nNo results yet: run `linearcnn validate`.\n"
    every = [r for records in results.values() for r in records.values()]
    suite, own = split_suite(results)
    claimed = [r for records in suite.values() for r in records.values()] or every
    first = claimed[0]
    config = first["config"]["name"]
    devices = sorted({r["device"] for r in every})
    on_cpu = all(d.startswith("cpu") for d in devices)
    wall = sum(r.get("wall_seconds", 0.0) for r in claimed)
    command = first.get("command") or f"linearcnn validate --config {config}"
    failed = [f"{slug}/{n}: {r['results']['error']}" for slug, records in results.items() for n, r in records.items()
              if "error" in r["results"]]
    slugs = list(results)
    rows = claim_cells(results)
    lines = [
        "# Validation report",
        "",
        "Generated by `validation/report.py` from the results JSON; do not edit by hand.",
        "",
        f"- **Configuration**: `{config}`" + (" — **CPU, scaled down**; the GPU run (`--config gpu`) is pending." if on_cpu else ""),
        "- **Data**: " + "; ".join(f"`{slug}`: {tables.data_line(records)}" for slug, records in results.items()),
        f"- **Device**: {', '.join(devices)}; torch {first['versions'].get('torch')}, linearcnn {first['versions'].get('linearcnn')}",
        f"- **Seeds**: {', '.join(map(str, first['seeds']))}; every number is mean +- std over seeds (or seed pairs).",
        f"- **Reproduce**: `{command}` (this invocation: {wall / 60:.1f} min{_training_time(suite or results)})",
        *_own_lines(own),
        *(["- **Failed experiments**: " + "; ".join(failed)] if failed else []),
        "",
        "## Claims of PAPER.md section 4",
        "",
        "One column per data set we measured; the paper's numbers stand with their own data sets and are never "
        "ours. Our numbers are the init-subtracted view (the authors' code's default; the raw view is in each data "
        "set's section). A fit's 95% interval is a bootstrap over filters (mean of the seeds' intervals).",
        "",
        *claims_table(rows, slugs),
        "",
        "Verdict rules: correlations **reproduce** when |ours - paper| <= max(0.05, paper's +- spread); "
        "**partly** when not, but both lie in the same band (high >= 0.7, moderate 0.3-0.7, near zero |r| < 0.3, "
        "negative <= -0.3); otherwise **does not**. Frozen first layer: |test accuracy gap| <= 0.02 reproduces, "
        "<= 0.05 partly. Ours on a data set the paper used is compared with the paper's number for it; on other "
        "data, with the published number nearest ours. A measurement resting on a run that missed its training "
        "target is **not converged** and gets no verdict; a fit at its search bound or degenerate is left out.",
        "",
        tally_line(tally(rows)),
        "",
        "## Deviations",
        "",
        *(_deviations(rows, results) or ["None."]),
        "",
        *explained(results, lambda figure: (_relative(figures_dir, report_dir) / figure).as_posix()),
        "",
        "## Setting: paper vs this run",
        "",
        *tables.setup_section(results),
        "",
    ]
    for slug, records in results.items():
        lines += [f"## Data set `{slug}`", "", tables.data_line(records), ""]
        lines += tables.data_set_section(ok(records), [(claim, by_data[slug]) for claim, by_data in rows])
    figures = _figure_links(results, figures_dir, report_dir)
    if figures:
        lines += ["## Figures", ""] + figures
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


def render_readme_results(results: dict[str, Records], *, figures_dir: str = "figures") -> str:
    """The README's headline: the claims table (one column per data set), the tally, the command
    that reproduces it, and the main figures of the first data set; between README_START and README_END."""
    results = {slug: ok(records) for slug, records in results.items() if ok(records)}
    if not results:
        return f"{README_START}\nNo validation results yet: run `linearcnn validate`.\n{README_END}"
    suite, own_results = split_suite(results)
    results = suite or results
    every = [r for records in results.values() for r in records.values()]
    first = every[0]
    on_cpu = all(r["device"].startswith("cpu") for r in every)
    wall = sum(r.get("wall_seconds", 0.0) for r in every)
    rows = claim_cells(results)
    lines = [
        README_START,
        f"Configuration `{first['config']['name']}`" + (" (CPU, scaled down; the GPU run is pending)" if on_cpu else "")
        + "; data " + "; ".join(f"`{slug}`: {tables.data_line(records)}" for slug, records in results.items())
        + f"; seeds {', '.join(map(str, first['seeds']))}. Reproduce: "
        f"`{first.get('command') or 'linearcnn validate'}` (this invocation {wall / 60:.1f} min{_training_time(results)}). "
        "Every row, the per-arm tables, the "
        "rules and the deviations: [`validation/REPORT.md`](validation/REPORT.md).",
        "",
        *claims_table(rows, list(results)),
        "",
        tally_line(tally(rows)),
        "",
    ]
    produced = [f for r in next(iter(results.values())).values() for f in r["results"].get("figures", [])]
    for name in README_FIGURES:
        for figure in produced:
            if Path(figure).name == name:
                lines += [f"![{name}]({figures_dir}/{figure})", ""]
    if any("init" in records for records in own_results.values()):
        lines += tables.init_summary(own_results, figures_dir)
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

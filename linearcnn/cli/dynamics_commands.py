"""`linearcnn simulate`: exact full-batch GD of the linear CNN, compared with the formula.

One pass over the data gives the moments A, b (`linearcnn.dynamics`); the filters at every
requested step come in closed form. The data, targets and initial filters are built exactly as
`linearcnn train --arch linear` builds them for the same options (`prepare_training_data`, the
seeded `build_model`), so `simulate` predicts what `train --arch linear --batch-size N
--precision float64` produces, step for step.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from linearcnn._files import check_outputs
from linearcnn.cli._app import app
from linearcnn.cli._format import console, echo_warnings, options_named, parse_int_list, print_json
from linearcnn.cli.data_commands import DataOption
from linearcnn.errors import LinearCNNInputError


def _parse_steps(text: str) -> list[int]:
    steps = parse_int_list(text, "--steps")
    if any(s < 0 for s in steps):
        raise LinearCNNInputError(f"--steps expects non-negative integers, got {text!r}")
    return steps


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _flagged(correlation: float | None, at_bound: bool, degenerate: bool) -> str:
    """A fit's correlation, marked when the fit is no evidence of agreement (`FitResult`)."""
    found = [name for name, flag in (("bound", at_bound), ("degenerate", degenerate)) if flag]
    return _fmt(correlation) + (f" ({', '.join(found)})" if found else "")


@app.command()
def simulate(
    data: DataOption = "builtin",
    kernel: int = typer.Option(3, "--kernel", "--kernel-size", "-k", help="Kernel size k of the linear CNN."),
    filters: int = typer.Option(64, "--filters", "--width", help="Number of filters K."),
    sigma: float = typer.Option(1e-3, "--sigma", "--init-std", help="Initial filter std."),
    lr: float = typer.Option(0.01, "--lr", help="SGD step size on the MSE loss (stable iff lr < K / max eigenvalue of A)."),
    steps: str = typer.Option("1,10,100,1000", "--steps", help="Comma-separated step counts, e.g. 0,10,100,1000."),
    labels: str = typer.Option("true", "--labels", help="true (y = +1 for even classes, -1 for odd) or random (seeded +-1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial filters (and of random labels)."),
    label_seed: int | None = typer.Option(None, "--label-seed", help="Seed of the random labels (default: --seed)."),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N training images."),
    centered: bool = typer.Option(False, "--centered/--uncentered", help="Patch PCA of the covariance instead of the second moment."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for the data passes; results are float64)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Save the filters at every step (.npz)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Exact GD of the linear CNN at any step (closed form), fitted against the formula, with assumption diagnostics.

    Per step: the init-subtracted energy profile's best formula fit (correlation, tau), the theory's
    tau = (2 lr / K) t / J (what the fit should find if A = C / J), the correlation with the formula
    at that tau, the raw-weight fit, and whitening indicators. Then how far the data are from the
    theory's assumptions (a) and (b). --out saves the filters at every step (.npz). A fit whose
    optimum is an end of its search range, or whose fitted profile is flat, is marked "(bound)"
    or "(degenerate)" next to its correlation, warned about on stderr, and flagged in --json (at_bound, degenerate,
    raw_at_bound, raw_degenerate, warnings per step).
    """
    from linearcnn.records import versions
    from linearcnn.simulation_report import run_simulation
    from linearcnn.train import TrainConfig

    step_list = _parse_steps(steps)
    if out is not None:
        check_outputs({"--out": (out, (".npz",))})
    config = TrainConfig(
        arch="linear", data=data, labels=labels, lr=lr, seed=seed, label_seed=label_seed, width=filters,
        kernel_size=kernel, init_std=sigma, limit=limit, precision="float64", device="cpu",
    ).validate().resolved()
    with options_named({"kernel_size": "--kernel"}):
        run = run_simulation(config, step_list, centered=centered, device=device)
    sim, stats = run.sim, run.stats
    n, channels = sim.num_images, sim.initial_weights.shape[1]
    meta = {
        "command": "simulate",
        "config": {
            "data": data, "kernel": kernel, "filters": filters, "sigma": sigma, "lr": lr, "steps": step_list,
            "labels": labels, "seed": seed, "label_seed": config.label_seed, "limit": limit, "centered": centered,
            "device": device,
        },
        "data_info": run.data_info,
        "num_images": sim.num_images,
        "num_locations": sim.num_locations,
        "eta": sim.eta,
        "max_stable_lr": sim.max_stable_lr,
        "a_max_eigenvalue": float(sim.a_eigenvalues[0]),
        "patch_max_eigenvalue": float(stats.eigenvalues[0]),
        "versions": versions(),
    }
    if out is not None:
        run.save(out, meta)
    echo_warnings(note for r in run.steps for note in r.warnings)
    if as_json:
        rows = [r.to_dict() for r in run.steps]
        print_json({**meta, "steps": rows, "diagnostics": run.diagnostics.to_dict(), "saved": str(out) if out else None})
        return

    from rich.table import Table

    table = Table(title=f"linear CNN, exact full-batch GD: {data}, {n} images, {filters} filters {channels}x{kernel}x{kernel}, "
                        f"lr {lr:g} (stable below {sim.max_stable_lr:.4g}), {labels} labels")
    for col in ("step", "fit corr", "fit tau", "theory tau", "corr at theory tau", "raw fit corr",
                "corr 1/lambda", "corr lambda", "raw flatness"):
        table.add_column(col, justify="right", no_wrap=col.endswith("fit corr"))  # a flag stays beside its value
    for r in run.steps:
        w = r.whitening or {}
        table.add_row(
            str(r.step), _flagged(r.fit_correlation, r.at_bound, r.degenerate), _fmt(r.fit_tau, ".4g"),
            _fmt(r.theory_tau, ".4g"), _fmt(r.theory_correlation),
            _flagged(r.raw_fit_correlation, r.raw_at_bound, r.raw_degenerate),
            _fmt(w.get("corr_inv_sqrt_eigenvalues")), _fmt(w.get("corr_sqrt_eigenvalues")), _fmt(r.raw_spectral_flatness, ".3g"),
        )
    c = console()
    c.print(table)
    s = run.diagnostics
    c.print(
        f"assumption (a), patches uncorrelated: off-diagonal mass of A in the patch-PCA basis {s.offdiag_fraction:.3f} "
        f"(sampling noise alone: {s.offdiag_noise_level:.3f}), RMS correlation between components {s.offdiag_correlation_rms:.3f} "
        f"(noise: ~{1 / math.sqrt(s.num_images):.3f}); A_ii / (mu_i/J): geometric mean {s.a_ratio_geomean:.3g}, "
        f"log-spread {s.a_ratio_log_std:.3g}; corr(log A_ii, log mu_i) {s.a_log_correlation:.3f}"
    )
    c.print(
        f"assumption (b), labels uncorrelated: corr(log|u_i.b|, log sqrt(mu_i)) {s.z_log_correlation:.3f}; "
        f"|u_i.b| / sd under (a)+(b): mean {s.z_ratio_mean:.3g}, cv {s.z_ratio_cv:.3g} "
        f"(theory {s.folded_normal_mean:.3f}, {s.folded_normal_cv:.3f}); under (b) alone: mean {s.z_label_ratio_mean:.3g}, "
        f"cv {s.z_label_ratio_cv:.3g}"
    )
    if any(r.at_bound or r.degenerate or r.raw_at_bound or r.raw_degenerate for r in run.steps):
        c.print("fits marked bound sit at an end of their search range, fits marked degenerate are flat (warnings on "
                "stderr): such a correlation is not agreement with the formula.")
    if out is not None:
        c.print(f"wrote {out}")

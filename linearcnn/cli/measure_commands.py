"""`linearcnn stats | profile | fit | compare`: measure first layers against patch statistics.

Every output names its data (and whether the checkpoint recorded it), the image size, padding
and normalisation, the kind of weights (init-subtracted or raw, and why), and whether the patch
statistics came from the on-disk cache."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, List, Optional

import numpy as np
import typer

from linearcnn._files import FIGURE_SUFFIXES, atomic_write_text, check_outputs
from linearcnn.cli._app import app
from linearcnn.cli._format import console, echo_warnings, options_named, print_json, print_written
from linearcnn.cli.data_commands import ChannelsOption, CheckpointDataOption, DataOption, ImageSizeOption
from linearcnn.errors import LinearCNNInputError
from linearcnn.measurement import (
    DataOptions,
    Measurement,
    compare_measurements,
    data_record,
    data_title,
    fit_measurement,
    load_patch_stats_with_source,
    measure_checkpoint,
)
from linearcnn.records import to_json

if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.fit import FitResult

# The options the measuring commands share.
CheckpointOption = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="Checkpoint: torch, TorchScript, safetensors, ONNX, npy/npz, "
                       "Keras .keras/.h5, or a Hugging Face model folder.")
]
LayerOption = Annotated[Optional[str], typer.Option("--layer", help="First-layer name (default: found automatically).")]
InitOption = Annotated[Optional[bool], typer.Option(
    "--init/--no-init", help="Subtract the initial weights stored in the checkpoint (default: when it stores them).",
    show_default=False,
)]
InitCheckpointOption = Annotated[
    Optional[Path], typer.Option("--init-checkpoint", help="Subtract this checkpoint's weights of the same layer.")
]
StatsOption = Annotated[
    Optional[Path], typer.Option("--stats", help="Precomputed patch statistics (from `linearcnn stats --out`).")
]
CenteredOption = Annotated[bool, typer.Option("--centered/--uncentered", help="Subtract the mean patch (covariance).")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]
LimitOption = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N images.")]
PadOption = Annotated[int, typer.Option("--pad", help="Zero-pad every image by N px on each side after normalisation.")]
NormOption = Annotated[Optional[str], typer.Option(
    "--norm", help="Normalisation: data (the set's own channel mean/std; default, or the checkpoint's recorded one) "
    "| imagenet (mean 0.485,0.456,0.406, std 0.229,0.224,0.225).", show_default=False,
)]
CacheOption = Annotated[bool, typer.Option("--cache/--no-cache", help="Read and write patch statistics in the on-disk cache "
                                           "($LINEARCNN_CACHE_DIR, else ~/.cache/linearcnn).")]
FoldBnOption = Annotated[bool, typer.Option(
    "--fold-bn", help="Multiply each filter by the following BatchNorm's gamma / sqrt(running_var + eps) (state dicts, "
    "ONNX, Keras); the output says whether one was found. Measures raw weights (the stored initial layer is unfolded).")]
UnsafeLoadOption = Annotated[
    bool, typer.Option("--unsafe-load", help="Allow loading a pickled nn.Module (runs code from the file).")
]


#: The library's parameters that these commands spell differently.
_FLAGS = {"stats_file": "--stats", "fold_bn": "--fold-bn"}


def _measure(checkpoint: Path, **options: Any) -> Measurement:
    """`measure_checkpoint` with progress shown, its errors under this command's flags and its
    warnings (e.g. a kernel large for the images) echoed to stderr as `warning: ...`."""
    with options_named(_FLAGS), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measured = measure_checkpoint(checkpoint, progress=True, **options)
    echo_warnings(w.message for w in caught)
    return measured


def _options(image_size: Optional[int], channels: Optional[int], pad: int) -> DataOptions:
    return DataOptions(image_size=image_size, channels=channels, pad=pad)


def _say(m: Measurement, as_json: bool) -> None:
    """The two defaults a reader must know, on stderr before a table: which data, which weights."""
    if not as_json:
        notes = "".join(f"\nnote: {n}" for n in m.layer_record()["layer_notes"])
        console().print(f"data: {m.data_note}\nweights: {m.init_note}{notes}", highlight=False, soft_wrap=True)




@app.command()
def stats(
    data: DataOption = "builtin",
    kernel: int = typer.Option(3, "--kernel", "-k", help="Patch size k (patches are C x k x k)."),
    centered: CenteredOption = False,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    pad: PadOption = 0,
    norm: NormOption = None,
    cache: CacheOption = True,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the statistics (.npz) for --stats."),
    plot_eigenvectors: Optional[Path] = typer.Option(None, "--plot-eigenvectors", help="Draw eigenvectors as patches (PNG)."),
    top: int = typer.Option(10, "--top", help="Eigenvalues to show in the table."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Exact second moments of all stride-1 patches of a data set, and their eigen-decomposition."""
    if kernel < 1:
        raise LinearCNNInputError(f"--kernel must be >= 1, got {kernel}")
    check_outputs({"--out": (out, (".npz",)), "--plot-eigenvectors": (plot_eigenvectors, FIGURE_SUFFIXES)})
    options = DataOptions(image_size=image_size, channels=channels, pad=pad, norm=norm or "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, source = load_patch_stats_with_source(data, None, kernel, centered=centered, device=device, limit=limit,
                                                      what=f"--kernel {kernel}", progress=not as_json, options=options,
                                                      cache=cache)
    echo_warnings(w.message for w in caught)
    record = data_record(result, options, data=data, note=data, cache=source)
    if out is not None:
        result.save(out)
    if plot_eigenvectors is not None:
        from linearcnn.plots import plot_eigenvectors as draw

        draw(result.eigenvectors, result.channels, kernel, plot_eigenvectors, eigenvalues=result.eigenvalues)
    payload = {
        **record, "images": int(result.num_images), "patch_shape": [result.channels, kernel, kernel],
        "num_patches": int(result.num_patches), "centered": centered, "eigenvalues": result.eigenvalues,
        "channel_mean": result.channel_mean, "channel_std": result.channel_std,
        "saved": str(out) if out else None,
    }
    if as_json:
        print_json(payload)
        return
    from rich.table import Table

    table = Table(title=f"patch statistics: {data_title(record)}, {result.channels}x{kernel}x{kernel}, "
                        f"{result.num_patches:,} patches, {'centred' if centered else 'uncentred'}")
    table.add_column("component", justify="right")
    table.add_column("eigenvalue", justify="right")
    table.add_column("share of variance", justify="right")
    total = float(np.sum(result.eigenvalues))
    for i, value in enumerate(result.eigenvalues[:top]):
        table.add_row(str(i), f"{value:.5g}", f"{value / total:.2%}")
    console().print(table)
    print_written(out, plot_eigenvectors)


@app.command()
def profile(
    checkpoint: CheckpointOption,
    data: CheckpointDataOption = None,
    layer: LayerOption = None,
    init: InitOption = None,
    init_checkpoint: InitCheckpointOption = None,
    stats_file: StatsOption = None,
    centered: CenteredOption = False,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    pad: PadOption = 0,
    norm: NormOption = None,
    cache: CacheOption = True,
    unsafe_load: UnsafeLoadOption = False,
    fold_bn: FoldBnOption = False,
    top: Optional[int] = typer.Option(None, "--top", help="Show only the N leading components in the table (JSON has all)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """The energy profile of a checkpoint's first layer (PAPER Sec. 1), and its best formula fit
    (gradient flow, as `linearcnn fit` without options), flagged when that fit is no fit."""
    from linearcnn.energy import energy_profile, whitening_indicators

    m = _measure(checkpoint, data=data, layer=layer, init=init, init_checkpoint=init_checkpoint, unsafe_load=unsafe_load,
                 fold_bn=fold_bn,
                 centered=centered, device=device, limit=limit, stats_file=stats_file,
                 options=_options(image_size, channels, pad), norm=norm, cache=cache)
    energy = energy_profile(m.weights, m.stats.eigenvectors)
    indicators = whitening_indicators(m.weights, m.stats)
    result = _fit_with_warnings(m) if energy.size >= 3 and np.ptp(energy) > 0 else None  # else nothing to fit
    payload = {
        "layer": m.layer.name, "format": m.layer.format, **m.layer_record(), "filters": int(m.weights.shape[0]),
        "patch_shape": list(m.weights.shape[1:]), **m.data_record(), "init_subtracted": m.init_subtracted,
        "weights_note": m.init_note, "eigenvalues": m.stats.eigenvalues, "profile": energy, "whitening": indicators,
        "fit_family": result.family if result else None, "fit_correlation": result.correlation if result else None,
        "fit_tau": result.tau if result else None, "at_bound": bool(result and result.at_bound),
        "degenerate": bool(result and result.degenerate), "warnings": result.warnings if result else [],
    }
    if as_json:
        print_json(payload)
        return
    from rich.table import Table

    _say(m, as_json)
    table = Table(title=f"energy profile of {m.layer.name} ({m.weights.shape[0]} filters, "
                        f"{'init subtracted' if m.init_subtracted else 'raw weights'}) on {data_title(m.data_record())}")
    for col in ("component", "eigenvalue", "energy", "energy / max"):
        table.add_column(col, justify="right")
    peak = energy.max()
    if top is not None and top < 1:
        raise LinearCNNInputError(f"--top must be >= 1, got {top}")
    shown = len(energy) if top is None else min(top, len(energy))
    for i, (mu, e) in enumerate(zip(m.stats.eigenvalues[:shown], energy[:shown])):
        table.add_row(str(i), f"{mu:.4g}", f"{e:.4g}", f"{e / peak:.3f}")
    if shown < len(energy):
        table.caption = f"{shown} of {len(energy)} components (--top); --json has all"
    console().print(table)
    if result is not None:
        console().print(f"best formula fit ({result.family}): correlation {_flag_text(result.correlation, result.caveat)}, "
                        f"tau {result.tau:.4g}")


def _fit_with_warnings(m: Measurement, **options: Any) -> FitResult:
    """`fit_measurement`, its Python warnings and the fit's own warnings echoed to stderr as `warning: ...`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_measurement(m, **options)
    echo_warnings([w.message for w in caught] + list(result.warnings))
    return result


def _flag_text(correlation: float, caveat: str) -> str:
    """A correlation, with the fit's caveat beside it (`FitResult.caveat`) when it is no agreement."""
    return f"{correlation:.4f}" + (f"  ({caveat})" if caveat else "")


@app.command()
def fit(
    checkpoint: CheckpointOption,
    data: CheckpointDataOption = None,
    layer: LayerOption = None,
    init: InitOption = None,
    init_checkpoint: InitCheckpointOption = None,
    raw: bool = typer.Option(False, "--raw", help="Fit the two-parameter raw-weights family (init term)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fit steps of the discrete formula at this lr (default: gradient-flow tau)."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap resamples over filters for 95% intervals (0: none)."),
    stats_file: StatsOption = None,
    centered: CenteredOption = False,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    pad: PadOption = 0,
    norm: NormOption = None,
    cache: CacheOption = True,
    unsafe_load: UnsafeLoadOption = False,
    fold_bn: FoldBnOption = False,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw profile vs formula to this PNG."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON result to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Fit the linear-CNN formula to a checkpoint's first-layer energy profile.

    A fit whose optimum is an end of its search range (at_bound) or whose fitted profile is flat
    (degenerate) is no evidence of agreement: the table says so beside the correlation, each
    reason is a `warning:` line on stderr, and --json carries at_bound, degenerate and warnings.
    """
    from linearcnn.energy import whitening_indicators

    if bootstrap < 0:
        raise LinearCNNInputError(f"--bootstrap must be >= 0, got {bootstrap}")
    check_outputs({"--plot": (plot, FIGURE_SUFFIXES), "--out": (out, ())})
    m = _measure(checkpoint, data=data, layer=layer, init=init, init_checkpoint=init_checkpoint, unsafe_load=unsafe_load,
                 fold_bn=fold_bn,
                 centered=centered, device=device, limit=limit, stats_file=stats_file,
                 options=_options(image_size, channels, pad), norm=norm, cache=cache, prefer_raw=raw)
    result = _fit_with_warnings(m, lr=lr, raw=raw, bootstrap=bootstrap)
    indicators = whitening_indicators(m.weights, m.stats)
    payload = {
        "checkpoint": str(checkpoint), "layer": m.layer.name, "format": m.layer.format,
        "selected_by": getattr(m.layer, "selected_by", ""), **m.layer_record(),
        "filters": int(m.weights.shape[0]), "patch_shape": list(m.weights.shape[1:]), **m.data_record(),
        "init_subtracted": m.init_subtracted, "weights_note": m.init_note, "family": result.family,
        "bootstrap": bootstrap,
        "correlation": result.correlation, "correlation_ci95": result.interval.get("correlation"),
        "spearman": result.spearman, "tau": result.tau, "tau_ci95": result.interval.get("tau"),
        "steps": result.steps, "lr": result.lr, "init_ratio": result.init_ratio,
        "init_ratio_ci95": result.interval.get("init_ratio"), "search_range": result.search_range,
        "at_bound": result.at_bound, "degenerate": result.degenerate, "warnings": result.warnings,
        "caveat": result.caveat, "whitening": indicators, "eigenvalues": m.stats.eigenvalues,
        "profile": result.profile, "formula_profile": result.fitted_profile,
    }
    if plot is not None:
        from linearcnn.plots import plot_fit

        plot_fit(result.profile, result.fitted_profile, result.correlation, plot,
                 label=f"{Path(checkpoint).name}:{m.layer.name}", eigenvalues=m.stats.eigenvalues,
                 interval=result.interval.get("correlation"))
    if out is not None:
        atomic_write_text(out, to_json(payload))
    if as_json:
        print_json(payload)
        return
    _say(m, as_json)
    _print_fit_table(payload, plot, out)


def _print_fit_table(p: dict, plot: Optional[Path], out: Optional[Path]) -> None:
    from rich.table import Table

    table = Table(title=f"formula fit: {p['checkpoint']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    ci = p["correlation_ci95"]
    tci = p["tau_ci95"]
    rows = [
        ("layer", f"{p['layer']} ({p['format']}; {p['selected_by']})" if p.get("selected_by") else f"{p['layer']} ({p['format']})"),
        ("filters x patch", f"{p['filters']} x {'x'.join(map(str, p['patch_shape']))}"),
        ("data", data_title(p)),
        ("weights", p["weights_note"] + ("" if p["weights_as"] == "stored" else f" ({p['weights_as']})")),
        ("family", p["family"]),
        ("correlation (Pearson)", _flag_text(p["correlation"], p["caveat"])
         + (f"  [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")),
        ("Spearman", f"{p['spearman']:.4f}"),
        ("tau", f"{p['tau']:.4g}" + (f"  [95% CI {tci[0]:.3g}, {tci[1]:.3g}]" if tci else "")),
    ]
    if p["steps"] is not None:
        rows.append(("steps at lr", f"{p['steps']:.4g} at lr={p['lr']:g}"))
    if p["init_ratio"] is not None:
        rci = p["init_ratio_ci95"]
        rows.append(("init ratio r", f"{p['init_ratio']:.4g} (x max of init-free profile)"
                     + (f"  [95% CI {rci[0]:.3g}, {rci[1]:.3g}]" if rci else "")))
    low, high = p["search_range"]["tau"]
    rows.append(("tau search range", f"[{low:.4g}, {high:.4g}]"))
    wh = p["whitening"]
    for key, value in wh.items():
        rows.append((key.replace("_", " "), f"{value:.4f}"))
    for k, v in rows:
        table.add_row(k, str(v))
    console().print(table)
    console().print(_fit_legend(p), highlight=False, soft_wrap=False)
    print_written(plot, out)


def _fit_legend(p: dict) -> str:
    """What the fit table's quantities are, under it (PAPER.md sections 1-3, `linearcnn.fit`)."""
    lines = [
        "tau: the formula's gradient-flow time lr x steps (PAPER.md sec. 3, e_i ~ (1 - exp(-tau mu_i)) / sqrt(mu_i)), "
        "in units of 1/eigenvalue mu of the normalised patches; tau x max(mu) << 1: early training, the profile "
        "follows sqrt(mu); tau x min(mu) >> 1: whitened, 1/sqrt(mu)."
        + (" 'steps at lr' = tau / lr, for the discrete formula at that lr." if p["steps"] is not None else ""),
        (f"95% CI: bootstrap over the layer's filters ({p['bootstrap']} resamples of the filters, drawn with "
         "replacement, each refitted)." if p["bootstrap"] else "no intervals: --bootstrap 0."),
    ]
    if p["init_ratio"] is not None:
        lines.append("init ratio r: the raw-weights family sqrt(g_i^2 + r^2): the flat floor the random initial filters "
                     "add to every component, as a fraction of the largest init-free component.")
    lines.append("spectral flatness: geometric / arithmetic mean of the variances of the filter outputs (eigenvalues of "
                 "W C W^T); 1: the outputs are white. corr (inv) sqrt eigenvalues: correlation of the profile with "
                 "1/sqrt(mu) (a whitening bank) / sqrt(mu) (early training).")
    return "\n".join(lines)


@app.command()
def compare(
    checkpoints: List[Path] = typer.Argument(..., help="Two or more checkpoints whose first layers to compare."),
    data: CheckpointDataOption = None,
    layer: LayerOption = None,
    init: InitOption = None,
    stats_file: StatsOption = None,
    centered: CenteredOption = False,
    device: DeviceOption = "auto",
    limit: LimitOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    pad: PadOption = 0,
    norm: NormOption = None,
    cache: CacheOption = True,
    unsafe_load: UnsafeLoadOption = False,
    fold_bn: FoldBnOption = False,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Heatmap PNG of the correlation matrix."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the JSON result to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Correlation matrix of the energy profiles of several first layers (PAPER Sec. 1 similarity)."""
    if len(checkpoints) < 2:
        raise LinearCNNInputError(f"compare needs at least 2 checkpoints, got {len(checkpoints)}")
    check_outputs({"--plot": (plot, FIGURE_SUFFIXES), "--out": (out, ())})
    shared: dict[Any, Any] = {}
    measurements = [
        _measure(c, data=data, layer=layer, init=init, init_checkpoint=None, unsafe_load=unsafe_load, fold_bn=fold_bn,
                 centered=centered,
                 device=device, limit=limit, stats_file=stats_file, stats_cache=shared,
                 options=_options(image_size, channels, pad), norm=norm, cache=cache)
        for c in checkpoints
    ]
    records = [m.data_record() for m in measurements]
    kinds = {m.init_subtracted for m in measurements}
    if len({r["data"] for r in records}) > 1:
        echo_warnings(["the checkpoints were measured on different data (" + ", ".join(r["data_source"] for r in records)
                       + "); pass --data to measure them all on one set"])
    if len(kinds) > 1:
        echo_warnings(["some profiles are init-subtracted and some raw (see weights); pass --init or --no-init for one kind"])
    profiles, matrix = compare_measurements(measurements, [str(c) for c in checkpoints])
    labels = _short_labels(checkpoints)
    payload = {
        "checkpoints": [str(c) for c in checkpoints], "labels": labels,
        "layers": [m.layer.name for m in measurements], **records[0],
        "weights_as": [m.layer.weights_as for m in measurements],
        "data_per_checkpoint": [r["data_source"] for r in records],
        "init_subtracted": [m.init_subtracted for m in measurements], "weights": [m.init_note for m in measurements],
        "correlation_matrix": matrix, "profiles": profiles,
    }
    if plot is not None:
        from linearcnn.plots import plot_similarity_heatmap

        plot_similarity_heatmap(matrix, labels, plot)
    if out is not None:
        atomic_write_text(out, to_json(payload))
    if as_json:
        print_json(payload)
        return
    from rich.table import Table

    weights = "init subtracted" if kinds == {True} else "raw weights" if kinds == {False} else "mixed weights"
    table = Table(title=f"energy-profile correlation on {data_title(records[0])} ({weights})")
    table.add_column("")
    for lab in labels:
        table.add_column(lab, justify="right")
    for lab, row in zip(labels, matrix):
        table.add_row(lab, *(f"{v:.3f}" for v in row))
    console().print(table)
    print_written(plot, out)


def _short_labels(paths: List[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(Path(p.parent.name) / p.name) if names.count(p.name) > 1 else p.name for p in paths]

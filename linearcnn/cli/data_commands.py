"""`linearcnn data SPEC`: load a data set, print its summary, optionally draw a grid and measure
its power spectrum.

Other commands take their data set with the shared option type `DataOption` (`--data SPEC`,
parsed by `linearcnn.data.parse_data_spec` inside `load_dataset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from linearcnn._files import check_outputs
from linearcnn.cli._app import app
from linearcnn.cli._format import console, print_json
from linearcnn.data import DATA_SPEC_HELP, load_dataset, spectrum_exponent
from linearcnn.errors import LinearCNNInputError

#: `--data SPEC` for any command: `def cmd(data: DataOption = "builtin")`.
DataOption = Annotated[str, typer.Option("--data", "-d", help=DATA_SPEC_HELP, show_default=True)]
#: `--data SPEC` where no spec means "the data the checkpoint recorded, else builtin".
CheckpointDataOption = Annotated[Optional[str], typer.Option(
    "--data", "-d", help=DATA_SPEC_HELP + ". Default: the data a `linearcnn train` checkpoint recorded, else builtin.",
    show_default=False,
)]
#: The reshaping options every command that reads a data set shares.
ImageSizeOption = Annotated[Optional[int], typer.Option(
    "--image-size", help="Resize each image's short side to N and centre-crop N x N (ImageNet evaluation); "
    "mixed-size folders need it.",
)]
ChannelsOption = Annotated[Optional[int], typer.Option("--channels", help="Convert the images to 1 (grey) or 3 (RGB) channels.")]


def _format_numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.4f}" for value in values) + "]"


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    c, h, w = summary["shape"]
    out.print(summary["description"], highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("spec", summary["spec"])
    table.add_row(
        "images",
        f"{summary['count']} x {c}x{h}x{w} (C x H x W), pixels in [{summary['pixel_min']:.3f}, {summary['pixel_max']:.3f}]",
    )
    table.add_row("channel mean", _format_numbers(summary["channel_mean"]))
    table.add_row("channel std", _format_numbers(summary["channel_std"]))
    classes = summary["classes"]
    if summary["labelled"]:
        shown = ", ".join(f"{item['name']} {item['count']}" for item in classes[:20])
        more = f", ... ({len(classes) - 20} more)" if len(classes) > 20 else ""
        table.add_row("classes", f"{len(classes)}: {shown}{more}")
    else:
        table.add_row("classes", "unlabelled")
    if "spectrum" in summary:
        fit = summary["spectrum"]
        table.add_row(
            "power spectrum",
            f"P(f) ~ f^-{fit['power_exponent']:.3f} (amplitude exponent {fit['amplitude_exponent']:.3f}), "
            f"fit over {fit['f_min']:.4f}..{fit['f_max']:.4f} cycles/pixel, R^2 {fit['r_squared']:.4f}",
        )
    if "grid" in summary:
        table.add_row("grid", summary["grid"])
    out.print(table, highlight=False)


@app.command("data")
def data_command(
    spec: Annotated[str, typer.Argument(help=DATA_SPEC_HELP)] = "builtin",
    limit: Annotated[int | None, typer.Option("--limit", help="keep the first N images")] = None,
    test: Annotated[bool, typer.Option("--test", help="the test split (default: train)")] = False,
    seed: Annotated[int, typer.Option("--seed", help="seed of the builtin set")] = 0,
    grid: Annotated[
        Path | None, typer.Option("--grid", help="write a PNG grid of the first images")
    ] = None,
    grid_size: Annotated[int, typer.Option("--grid-size", help="images in the grid")] = 64,
    spectrum: Annotated[
        bool, typer.Option("--spectrum", help="fit the power-spectrum exponent")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
) -> None:
    """Load a data set and print its summary (count, shape, classes, channel mean/std)."""
    if grid is not None:
        check_outputs({"--grid": (grid, (".png",))})  # the grid is written as PNG pixels
    if grid_size <= 0:
        raise LinearCNNInputError(f"--grid-size {grid_size}: expected a positive number of images")
    dataset = load_dataset(spec, limit=limit, seed=seed, train=not test, image_size=image_size, channels=channels)
    summary = dataset.summary()
    if spectrum:
        fit = spectrum_exponent(dataset.images)
        summary["spectrum"] = {
            "power_exponent": fit.power_exponent,
            "amplitude_exponent": fit.amplitude_exponent,
            "r_squared": fit.r_squared,
            "f_min": fit.f_min,
            "f_max": fit.f_max,
            "num_images": fit.num_images,
        }
    if grid is not None:
        dataset.save_grid(grid, n=grid_size)
        summary["grid"] = str(grid)
    if json_output:
        print_json(summary)
    else:
        _print_summary(summary)

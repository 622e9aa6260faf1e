"""`linearcnn train`: train a linear or deep CNN, one seed or several (one after another or together).

`train` parses its options into a `linearcnn.train.TrainConfig`, calls `train_seeds` and prints
one summary line per seed. Under torchrun (`torchrun --nproc_per_node N -m linearcnn train ...`)
each process runs this same command; only rank 0 prints and writes.

Training errors name library parameters (`lr`, `batch_size`); the CLI's `main` shows the one in
`LinearCNNInputError.parameter` under its flag. Some training messages also name a second
setting that only ever means its option (`resume`, `overwrite`, `together`, `compile`,
`until_train_acc`, `until_loss`, `max_epochs`: "pass resume to continue it", "together does not
combine with compile", "steps does not combine with until_train_acc"); `_with_flags` shows those
under their flags too.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import typer

from linearcnn.cli._app import app
from linearcnn.errors import LinearCNNInputError, option_name

if TYPE_CHECKING:
    from linearcnn.train import TrainResult

# Settings that, in a training error message, always name their option (see the module docstring).
_FLAG_WORDS = ("resume", "overwrite", "together", "compile", "until_train_acc", "until_loss", "max_epochs", "first_layer_init",
               "init_stats", "freeze_first_layer")


def _with_flags(error: LinearCNNInputError) -> LinearCNNInputError:
    """The error with its parameter and the `_FLAG_WORDS` it mentions (outside quoted paths) written as CLI flags."""
    message = error.for_option(option_name(error.parameter)) if error.parameter is not None else str(error)
    parts = re.split(r"""('[^']*'|"[^"]*")""", message)  # odd parts: quoted values, left as they are
    for i in range(0, len(parts), 2):
        for word in _FLAG_WORDS:
            parts[i] = LinearCNNInputError(parts[i], parameter=word).for_option(option_name(word))
    return LinearCNNInputError("".join(parts))


@app.command()
def train(
    arch: str = typer.Option("vgg11", "--arch", help="linear, linear-multi, vgg11, vgg11-bn, resnet20 or resnet18."),
    data: str = typer.Option("builtin", "--data", help="Data set spec: builtin, cifar10:DIR, npz:FILE, ..."),
    labels: str = typer.Option("true", "--labels", help="true, or random (a seeded draw stored with the run)."),
    epochs: int = typer.Option(30, "--epochs", help="Passes over the data."),
    steps: int | None = typer.Option(None, "--steps", help="Stop after this many optimizer steps in total (overrides --epochs)."),
    until_train_acc: float | None = typer.Option(
        None, "--until-train-acc", help="Stop at the first epoch whose train accuracy is >= A, A in (0, 1] (cap: --max-epochs)."
    ),
    until_loss: float | None = typer.Option(
        None, "--until-loss", help="Stop at the first epoch whose mean train loss is <= L, L > 0 (cap: --max-epochs)."
    ),
    max_epochs: int | None = typer.Option(
        None, "--max-epochs", help="With --until-train-acc / --until-loss: at most this many epochs (default: --epochs)."
    ),
    lr: float = typer.Option(0.01, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(256, "--batch-size", help="Batch size; >= the number of images means full-batch."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adam."),
    momentum: float = typer.Option(0.0, "--momentum", help="SGD momentum (the paper: 0)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Weight decay."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation, data order and random labels."),
    seeds: str | None = typer.Option(None, "--seeds", help="Several seeds, e.g. 0,1,2: one model each, in OUT/seedS/."),
    together: bool = typer.Option(False, "--together", help="Train the --seeds models together (torch.func.vmap), not one after another."),
    label_seed: int | None = typer.Option(None, "--label-seed", help="Seed of the random labels (default: --seed)."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes of random labels (default: the data's, or 10)."),
    freeze_first_layer: bool = typer.Option(False, "--freeze-first-layer", help="Keep the first layer at its initialisation."),
    first_layer_init: str = typer.Option(
        "default", "--first-layer-init", metavar="INIT",
        help="The first layer at step 0: default, whitening (energy profile 1/sqrt(eigenvalue + eps) from the training "
        "data's patches), formula[:TAU] (the formula's profile at TAU; default: lr x planned steps, printed) or "
        "frozen-whitening (whitening, not trained); random orientation, the default init's norm.",
    ),
    init_stats: str | None = typer.Option(
        None, "--init-stats", metavar="FILE", help="Build --first-layer-init from this `linearcnn stats` file, not the training data.",
    ),
    width: int | None = typer.Option(None, "--width", help="First-layer filters (the deeper layers scale with it)."),
    kernel_size: int | None = typer.Option(None, "--kernel-size", help="First-layer kernel size (default 3; 7 for resnet18)."),
    init_std: float = typer.Option(1e-3, "--init-std", help="Initial filter std sigma of the linear models."),
    readout: str = typer.Option("fixed", "--readout", help="linear-multi readout: fixed (random, frozen) or trainable."),
    loss: str = typer.Option("auto", "--loss", help="auto (mse for linear models, cross-entropy otherwise), mse or cross-entropy."),
    limit: int | None = typer.Option(None, "--limit", help="Use only this many training images."),
    snapshot_every: int = typer.Option(0, "--snapshot-every", help="Keep the first layer every N steps (0: none)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast for deep nets on CUDA), float32, float64 or bf16."),
    compile: bool = typer.Option(
        False, "--compile/--no-compile", help="torch.compile the model (default: off; on the 2-core CPU it measured no faster "
        "than our eager loop, after a first compile of 17-56 s)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    test: bool = typer.Option(True, "--test/--no-test", help="Evaluate on the data's test split at every epoch end (when it has one)."),
    test_limit: int | None = typer.Option(None, "--test-limit", help="Evaluate on only this many test images."),
    test_every: int = typer.Option(1, "--test-every", help="Evaluate every N epochs (0: only at the end)."),
    sync_bn: str = typer.Option("auto", "--sync-bn", help="auto (SyncBatchNorm under torchrun on CUDA), on or off."),
    out: str = typer.Option("runs/train", "--out", help="Output folder (checkpoint.pt, metrics.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint in --out (starts fresh if there is none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a linear or deep CNN (true or random labels) and write a checkpoint with first-layer snapshots."""
    from linearcnn.train import final_metrics

    try:
        results = _train(
            arch=arch, data=data, labels=labels, epochs=epochs, steps=steps, until_train_acc=until_train_acc, until_loss=until_loss,
            max_epochs=max_epochs, lr=lr, batch_size=batch_size,
            optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, seed=seed, label_seed=label_seed,
            num_classes=num_classes, freeze_first_layer=freeze_first_layer, first_layer_init=first_layer_init,
            init_stats=init_stats, width=width, kernel_size=kernel_size, init_std=init_std, readout=readout, loss=loss, limit=limit,
            snapshot_every=snapshot_every,
            precision=precision, compile=compile, device=device, out=out, resume=resume, overwrite=overwrite,
            test=test, test_limit=test_limit, test_every=test_every, sync_bn=sync_bn, seeds=seeds, together=together, quiet=quiet,
        )
    except LinearCNNInputError as error:
        raise _with_flags(error) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for result in results:
        final = final_metrics(result)
        where = f"; checkpoint {result.checkpoint_path}" if result.checkpoint_path else ""
        test_text = f", test accuracy {final['test_accuracy']:.3f}" if "test_accuracy" in final else ""
        stop = result.stop
        if stop.get("max_epochs") is not None:  # a target rule
            rule = f"{stop['rule']} {stop['target']:g}"
            stop_text = (f", {rule} reached at epoch {stop['reached_epoch']} (step {stop['reached_step']})" if stop["reached"]
                         else f", not converged ({rule} not reached in {stop['max_epochs']} epochs)")
        else:
            stop_text = ""
        typer.echo(
            f"{result.config.arch} seed {result.config.seed} on {result.data_info['spec']} ({result.data_info['num_images']} images, "
            f"{result.device}{f' x{result.world_size}' if result.world_size > 1 else ''}): {result.step} steps, "
            f"{result.epoch} epochs, loss {final['loss']:.4g}, accuracy {final['accuracy']:.3f}{test_text}, "
            f"first-layer displacement {final['first_layer_displacement']:.3g}{stop_text}{where}"
        )


def _train(*, seeds: str | None, together: bool, quiet: bool, **options: Any) -> list[TrainResult]:
    """Validate the options as a TrainConfig and train every seed."""
    from linearcnn.train import TrainConfig, parse_seeds, progress_enabled, train_seeds

    config = TrainConfig(**options).validate()
    seed_list = parse_seeds(seeds) if seeds is not None else [options["seed"]]
    return train_seeds(config, seed_list, together=together, progress=progress_enabled(quiet))

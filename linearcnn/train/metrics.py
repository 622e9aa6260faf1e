"""Losses, right answers and the metrics book: per-epoch lists, running sums, summaries.

Per-epoch lists (epoch, step, loss, accuracy, seconds, images_per_second,
first_layer_displacement), one entry per step (step_loss: the batch's mean loss) and one per test
evaluation (test_step, test_loss, test_accuracy) make a run's `metrics` (`METRIC_KEYS`). Inside an
epoch the loss and accuracy sums run on the device; `book_segment` records a stretch of steps from
the one host copy of its sums. `first_layer_displacement` is ||W - W0||_F / ||W0||_F of the first
layer at the epoch's end (W0: its initial weights), computed on the device.

>>> book = empty_metrics()
>>> book_segment(book, [6.0, 3.0, 4, 0.0, 0.0, 0.25, 1.5, 1.5], step=2, epoch=1, elapsed=2.0, test=None, lr=0.1)["count"]
0
>>> book["loss"], book["accuracy"], book["images_per_second"], book["first_layer_displacement"]
([1.5], [0.75], [2.0], [0.25])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from linearcnn.checkpoints.training import CHECKPOINT_NAME
from linearcnn.errors import LinearCNNInputError
from linearcnn.records import versions
from linearcnn.train.config import TrainConfig
from linearcnn.train.device_data import HeldOutData

if TYPE_CHECKING:
    from linearcnn.train.loop import TrainResult

METRICS_NAME = "metrics.json"
METRIC_KEYS = (
    "epoch", "step", "loss", "accuracy", "seconds", "images_per_second", "step_loss", "test_step", "test_loss", "test_accuracy",
    "first_layer_displacement",
)
TOTALS_STEP_LOSSES = 6  # where the step losses start in a segment's totals (`book_segment`)

Metrics = dict[str, list[Any]]  # METRIC_KEYS -> lists
Partial = dict[str, Any]  # running sums of an unfinished epoch: loss_sum, correct, count, seconds (+ first_layer_displacement)


def empty_metrics() -> Metrics:
    return {key: [] for key in METRIC_KEYS}


def empty_partial() -> Partial:
    return {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str, num_classes: int) -> torch.Tensor:
    """(B,) per-image losses: squared error (mean over classes) or cross-entropy."""
    if loss == "mse":
        if outputs.ndim == 1:
            return (outputs - targets) ** 2  # (B,)
        onehot = F.one_hot(targets, num_classes).to(outputs.dtype)  # (B, classes)
        return ((outputs - onehot) ** 2).mean(dim=1)  # (B,)
    return F.cross_entropy(outputs, targets, reduction="none")  # (B,)


def is_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) bool right answers (sign for `linear`, argmax otherwise)."""
    if outputs.ndim == 1:
        return torch.sign(outputs) == torch.sign(targets)
    return outputs.argmax(dim=1) == targets


def test_now(config: TrainConfig, test: HeldOutData | None, epoch_done: bool, epoch_number: int, last: bool) -> bool:
    """Whether a stretch of steps ends with a test pass: at the end, and every `test_every` epochs."""
    every = config.test_every
    return test is not None and (last or (epoch_done and every > 0 and epoch_number % every == 0))


def record_test(metrics: Metrics, step: int, sums: Sequence[float], test: HeldOutData) -> None:
    """Append one test pass (sums [loss, number right] over the whole test split) to the metrics."""
    count = test.info["num_images"]
    metrics["test_step"].append(int(step))
    metrics["test_loss"].append(sums[0] / count)
    metrics["test_accuracy"].append(sums[1] / count)


def book_segment(
    metrics: Metrics, totals: Sequence[float], *, step: int, epoch: int | None, elapsed: float, test: HeldOutData | None, lr: float,
) -> Partial:
    """Record one stretch of training steps in `metrics`; return the new partial-epoch sums.

    totals: [loss sum, number right, images, test loss sum, test number right, first-layer
    displacement, step losses...] summed over ranks (the displacement is rank 0's, the others add
    0); `epoch` is the number of the epoch this stretch completed, or None when it
    stopped inside an epoch (then the running sums are returned, exact, for a resume); `test` is
    the test split when the stretch ended with a test pass (its sums are totals[3:5]).
    Raises LinearCNNInputError when the loss is no longer finite (the run diverged).
    """
    metrics["step_loss"].extend(totals[TOTALS_STEP_LOSSES:])
    if test is not None:
        record_test(metrics, step, totals[3:5], test)
    loss_total, correct_total, count_total = totals[0], totals[1], round(totals[2])
    if not math.isfinite(loss_total):
        raise LinearCNNInputError(f"training diverged by step {step} (loss {loss_total}) with lr {lr:g}; use a smaller lr", parameter="lr")
    if not math.isfinite(totals[5]):  # the loss can stay finite (e.g. behind batch norm) while the weights blow up
        raise LinearCNNInputError(
            f"training diverged by step {step}: the first layer is no longer finite (lr {lr:g}); use a smaller lr", parameter="lr"
        )
    if epoch is None:
        return {"loss_sum": loss_total, "correct": correct_total, "count": count_total, "seconds": elapsed,
                "first_layer_displacement": totals[5]}
    metrics["epoch"].append(epoch)
    metrics["step"].append(step)
    metrics["loss"].append(loss_total / count_total)
    metrics["accuracy"].append(correct_total / count_total)
    metrics["seconds"].append(elapsed)
    metrics["images_per_second"].append(count_total / elapsed if elapsed > 0 else float("nan"))
    metrics["first_layer_displacement"].append(totals[5])
    return empty_partial()


def last_metrics(metrics: Metrics, partial: Partial) -> dict[str, float]:
    """Mean loss and accuracy over the last epoch (or the unfinished one), the first layer's
    displacement at its end, and the last test pass."""
    nan = float("nan")
    displacements = metrics.get("first_layer_displacement") or [nan]
    if partial["count"]:
        last = {"loss": partial["loss_sum"] / partial["count"], "accuracy": partial["correct"] / partial["count"],
                "first_layer_displacement": partial.get("first_layer_displacement", nan)}
    elif metrics["loss"]:
        last = {"loss": metrics["loss"][-1], "accuracy": metrics["accuracy"][-1], "first_layer_displacement": displacements[-1]}
    else:
        last = {"loss": nan, "accuracy": nan, "first_layer_displacement": nan}
    if metrics.get("test_accuracy"):
        last.update(test_loss=metrics["test_loss"][-1], test_accuracy=metrics["test_accuracy"][-1])
    return last


def final_metrics(result: TrainResult) -> dict[str, float]:
    """Mean loss and accuracy over the last epoch (or over the last partial epoch, when `steps` ended inside one)."""
    return last_metrics(result.metrics, result.partial)


#: The speed settings a run records in `metrics.json` (and, through the data's description, its checkpoint).
SPEED_SETTINGS = ("memory_format", "compiled", "fused_update", "cpu_allocator")


def metrics_summary(
    config: TrainConfig, metrics: Metrics, partial: Partial, epoch: int, step: int, device: torch.device, world_size: int, final: bool,
    stop: dict[str, Any], *, speed: Mapping[str, Any] | None = None, first_layer_init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's `metrics.json`: config, seed, versions, device, the speed settings it trained with
    (`SPEED_SETTINGS`, from `speed`: the layout of its images, whether it was compiled, whether its
    optimizer used the fused update, the CPU allocator setting), where it stands, its stopping rule
    and whether it converged (`linearcnn.train.stopping.stop_record`), the last metrics and the book;
    how the first layer was initialised (`linearcnn.first_layer_init`)."""
    speed = speed or {}
    return {
        "config": config.to_dict(), "seed": config.seed, "versions": versions(), "device": str(device),
        **{key: speed.get(key) for key in SPEED_SETTINGS},
        "first_layer_init": first_layer_init or {"name": "default", "value": "default"},
        "world_size": world_size, "finished": final, "epoch": epoch, "step": step, "stop": stop, "converged": bool(stop["reached"]),
        "final": last_metrics(metrics, partial), "checkpoint": CHECKPOINT_NAME, "metrics": metrics,
    }


__all__ = [
    "METRICS_NAME",
    "METRIC_KEYS",
    "SPEED_SETTINGS",
    "book_segment",
    "empty_metrics",
    "empty_partial",
    "final_metrics",
    "is_correct",
    "last_metrics",
    "metrics_summary",
    "per_sample_loss",
    "record_test",
    "test_now",
]

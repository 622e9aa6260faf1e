"""When a run stops: after `epochs` (or `steps`), or at a stated regime with a cap.

A run has one stopping rule (`stop_rule`):

* "epochs" (the default): `epochs` passes over the data; "steps": `steps` optimizer steps;
* "until_train_acc": the first epoch end where that epoch's train accuracy (the running accuracy
  over its batches, as the metrics record it) is >= `until_train_acc`;
* "until_loss": the first epoch end where that epoch's mean train loss is <= `until_loss`.

A target rule is bounded by `max_epochs` (default: `epochs`); a run that reaches the bound
without reaching its target is "not converged". The rule is checked once per epoch end, by the
loop, on the host copy of the metrics just booked (no extra sync). Whether and when the target was
reached is read from the per-epoch metrics alone (`stop_record`), so a resumed run that already
reached its target trains no further, and one resumed with a larger `max_epochs` goes on.

>>> config = TrainConfig(until_train_acc=0.5, max_epochs=4)
>>> stop_rule(config), epoch_bound(config)
('until_train_acc', 4)
>>> metrics = {"epoch": [1, 2, 3], "step": [2, 4, 6], "loss": [0.9, 0.7, 0.6], "accuracy": [0.25, 0.5, 0.75]}
>>> stop_record(config, metrics, step=6)
{'rule': 'until_train_acc', 'target': 0.5, 'reached': True, 'reached_step': 4, 'reached_epoch': 2, 'max_epochs': 4}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from linearcnn.train.config import TrainConfig

TARGET_RULES = ("until_train_acc", "until_loss")


def stop_rule(config: TrainConfig) -> str:
    """The run's stopping rule: "until_train_acc", "until_loss", "steps" or "epochs"."""
    if config.until_train_acc is not None:
        return "until_train_acc"
    if config.until_loss is not None:
        return "until_loss"
    return "steps" if config.steps is not None else "epochs"


def epoch_bound(config: TrainConfig) -> int:
    """The epochs a run may take at most: `max_epochs` (default `epochs`) with a target, else `epochs`."""
    if stop_rule(config) in TARGET_RULES and config.max_epochs is not None:
        return int(config.max_epochs)
    return int(config.epochs)


def step_bound(config: TrainConfig, steps_per_epoch: int) -> int:
    """The optimizer steps a run may take at most."""
    if config.steps is not None and stop_rule(config) == "steps":
        return int(config.steps)
    return epoch_bound(config) * steps_per_epoch


def epoch_reaches_target(config: TrainConfig, loss: float, accuracy: float) -> bool:
    """Whether one epoch's mean train loss / accuracy meets the run's target (False without a target)."""
    if config.until_train_acc is not None:
        return accuracy >= config.until_train_acc
    if config.until_loss is not None:
        return loss <= config.until_loss
    return False


def first_target_epoch(config: TrainConfig, metrics: Mapping[str, Sequence[Any]]) -> int | None:
    """Index in the per-epoch lists of the first epoch that met the run's target (None: none did, or no target)."""
    pairs = enumerate(zip(metrics["loss"], metrics["accuracy"]))
    return next((i for i, (loss, accuracy) in pairs if epoch_reaches_target(config, loss, accuracy)), None)


def stop_record(config: TrainConfig, metrics: Mapping[str, Sequence[Any]], step: int) -> dict[str, Any]:
    """The run's `stop` record at `step`, read from its per-epoch metrics.

    {"rule", "target", "reached", "reached_step", "reached_epoch", "max_epochs"}: the target is the
    threshold, or the number of epochs / steps; reached_step / reached_epoch say where it was first
    reached (for "steps", reached_epoch counts the epochs completed by then); max_epochs is the cap
    of a target rule (None otherwise). A run has converged when `reached` is true.
    """
    rule = stop_rule(config)
    epochs, steps = list(metrics["epoch"]), list(metrics["step"])
    cap = epoch_bound(config) if rule in TARGET_RULES else None
    record: dict[str, Any] = {"rule": rule, "target": None, "reached": False, "reached_step": None, "reached_epoch": None,
                              "max_epochs": cap}
    if rule == "steps":
        assert config.steps is not None  # the rule is "steps"
        record["target"] = target_steps = int(config.steps)
        if step >= target_steps:
            completed = sum(1 for s in steps if s <= target_steps)  # epochs completed by then
            record.update(reached=True, reached_step=target_steps, reached_epoch=completed)
        return record
    if rule == "epochs":
        record["target"] = int(config.epochs)
        at = config.epochs - 1 if len(epochs) >= config.epochs else None  # index of the epoch that reached it
    else:
        record["target"] = float(getattr(config, rule))
        at = first_target_epoch(config, metrics)
    if at is not None:
        record.update(reached=True, reached_step=int(steps[at]), reached_epoch=int(epochs[at]))
    return record


__all__ = ["TARGET_RULES", "epoch_bound", "epoch_reaches_target", "first_target_epoch", "step_bound", "stop_record", "stop_rule"]

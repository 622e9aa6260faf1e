"""What the loop drives: one optimizer step of S models at once, S = 1 or a vmapped stack of seeds.

The loop (`linearcnn.train.loop`) owns everything that happens once per run or per epoch
(resume, data order, running sums, test passes, snapshots, saving); a `Stepper` owns the models
and their optimizer and answers for all S models at once:

* `step(data, targets, rows, global_batch)`: one optimizer step on the batch `rows` of every
  model; returns each model's loss sum and number right, (S,) each, on the device (no host sync).
* `snapshot()`: the first layers, (S, K, C, k, k); `evaluate(test, dist)`: (S, 2) test sums.
* `sync_models()` / `models` / `optimizer_states()`: ordinary one-model modules and optimizer
  states, for checkpoints (a stacked run saves every seed as an ordinary one-model checkpoint).

`SingleStepper`: one model, plain or DistributedDataParallel-wrapped and/or `torch.compile`d,
channels_last for the deep nets (`channels_last_for`). `StackedStepper`: S models of one configuration that
differ only in their seed, stacked with `torch.func.stack_module_state` (every parameter and
buffer gains a leading axis of size S) and run as one by `vmap(functional_call)`. The loss is the
sum of the S models' batch-mean losses, so backward gives every model its own gradient, and one
optimizer over the stacked tensors is S independent optimizers: SGD (momentum, weight decay) and
Adam act elementwise. BatchNorm running statistics are stacked buffers, updated per model.
Results equal one-after-another training up to float rounding (the batched kernels sum in
another order; tests: float64, relative 1e-10).
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from linearcnn.errors import LinearCNNInputError
from linearcnn.models import build_seeded_model, first_layer, first_layer_name
from linearcnn.train.config import TrainConfig, channels_last_for
from linearcnn.train.device_data import HeldOutData, TrainingData
from linearcnn.train.distributed import Dist
from linearcnn.train.metrics import is_correct, per_sample_loss

Rows = slice | torch.Tensor  # contiguous rows [lo:hi] shared by all models, or (S, b) row indices per model


def seeded_model_for(config: TrainConfig, channels: int, num_classes: int, dtype: torch.dtype) -> nn.Module:
    """The model of a resolved config, initialised from `config.seed` alone (global RNG untouched), on the CPU.

    With `freeze_first_layer`, the first layer's parameters do not require gradients.
    """
    model = build_seeded_model(
        config.arch, channels, num_classes, seed=config.seed, width=config.width, kernel_size=config.kernel_size,
        init_std=config.init_std, trainable_readout=config.readout == "trainable",
    ).to(dtype=dtype)
    if config.freeze_first_layer:
        for parameter in first_layer(model).parameters():
            parameter.requires_grad_(False)
    return model


#: Devices where torch has a fused SGD / Adam update (one kernel over all parameters).
FUSED_DEVICES = ("cpu", "cuda")


def fused_update(parameters: Sequence[torch.Tensor]) -> bool:
    """Whether the optimizer updates `parameters` with torch's fused kernel: floating-point
    parameters on a device that has one. On the 2-core CPU the fused SGD step measured 1.03x the
    for-loop update for VGG11-bn width 16 (`python benchmarks/bench_train.py --steps 12 --repeats 4`,
    two runs: 2,568 vs 2,495 and 1,954 vs 1,901 images/s with channels_last), the same at width 64."""
    return bool(parameters) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in parameters)


def uses_fused_update(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` steps with the fused kernel: what its parameter groups say, which a
    resumed state can change (a checkpoint saved without it resumes without it)."""
    return all(bool(group.get("fused")) for group in optimizer.param_groups)


def optimizer_for(config: TrainConfig, parameters: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """The configured optimizer over `parameters` (SGD with momentum / weight decay, or Adam), with
    the fused update where `fused_update` says so."""
    fused = fused_update(parameters) or None  # None: torch's default (for-loop / foreach)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


class Stepper(ABC):
    """S models trained in step (see the module docstring)."""

    models: list[nn.Module]  # the S plain models (hold the trained weights after `sync_models`)

    def __init__(self, config: TrainConfig, num_classes: int, dtype: torch.dtype, autocast: AbstractContextManager[Any]):
        self.config, self.num_classes, self.dtype, self.autocast = config, num_classes, dtype, autocast

    @property
    def num_models(self) -> int:
        return len(self.models)

    @abstractmethod
    def step(self, data: TrainingData, targets: torch.Tensor, rows: Rows, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on `rows` of the data (targets (S, N)); ((S,) loss sums, (S,) numbers right) on the device."""

    @abstractmethod
    def snapshot(self) -> torch.Tensor:
        """A copy of the S first layers, (S, K, C, k, k) on the device."""

    @abstractmethod
    def forward_all(self, images: torch.Tensor) -> torch.Tensor:
        """Every model on the same images (b, C, H, W): (S, b) or (S, b, classes)."""

    @abstractmethod
    def mode_module(self) -> nn.Module:
        """The module whose train()/eval() mode the forward passes follow."""

    @abstractmethod
    def optimizer_states(self) -> list[dict[str, Any]]:
        """One ordinary one-model optimizer state per model."""

    def sync_models(self) -> None:  # noqa: B027  (optional hook: only the stacked stepper copies weights out)
        """Bring `models` up to date with the trained weights (nothing to do unless stacked)."""

    @torch.no_grad()
    def evaluate(self, test: HeldOutData, dist: Dist) -> torch.Tensor:
        """(S, 2) float64 on the device: [sum of per-image losses, number right] over this rank's test shard.

        The models are in eval mode for the pass (BatchNorm running statistics) and back in train
        mode after it. No host sync.
        """
        lo, hi = dist.shard(0, test.images.shape[0])  # this rank's contiguous shard
        batch = max(1, self.config.batch_size)
        module = self.mode_module()
        module.eval()
        sums = torch.zeros(self.num_models, 2, dtype=torch.float64, device=test.images.device)  # (S, 2)
        try:
            for start in range(lo, hi, batch):
                images = test.images[start : min(start + batch, hi)]  # (b, C, H, W)
                targets = test.targets[start : min(start + batch, hi)]  # (b,)
                with self.autocast:
                    outputs = self.forward_all(images)  # (S, b[, classes])
                b = outputs.shape[1]
                flat = outputs.to(self.dtype).reshape(self.num_models * b, *outputs.shape[2:])  # (S*b[, classes])
                repeated = targets.repeat(self.num_models)  # (S*b,)
                losses = per_sample_loss(flat, repeated, self.config.loss, self.num_classes).reshape(self.num_models, b).sum(dim=1)  # (S,)
                right = is_correct(flat, repeated).reshape(self.num_models, b).sum(dim=1)  # (S,)
                sums += torch.stack([losses.to(torch.float64), right.to(torch.float64)], dim=1)  # (S, 2)
        finally:
            module.train()
        return sums


class SingleStepper(Stepper):
    """One model: plain, DDP-wrapped under torchrun and/or torch.compile'd; channels_last for deep nets (`channels_last_for`)."""

    def __init__(
        self, model: nn.Module, config: TrainConfig, data: TrainingData, device: torch.device, dist: Dist, dtype: torch.dtype,
        autocast: AbstractContextManager[Any], optimizer_state: dict[str, Any] | None,
    ):
        super().__init__(config, data.num_classes, dtype, autocast)
        self.channels_last = channels_last_for(config, device)
        model = model.to(device=device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            data.images = data.images.contiguous(memory_format=torch.channels_last)  # (N, C, H, W) NHWC strides
        data.info["memory_format"] = "channels_last" if self.channels_last else "contiguous"  # recorded in the checkpoint
        self.model, self.models = model, [model]
        self.conv = first_layer(model)
        self.optimizer = optimizer_for(config, [p for p in model.parameters() if p.requires_grad])
        if optimizer_state is not None:
            _load_optimizer_state(self.optimizer, lambda: optimizer_state)
        data.info["fused_update"] = uses_fused_update(self.optimizer)  # recorded in the checkpoint and metrics.json
        step_model: nn.Module = model
        if dist.world_size > 1:
            step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            step_model = torch.compile(step_model, dynamic=False)  # type: ignore[assignment]
        data.info["compiled"] = bool(config.compile)  # recorded in the checkpoint and metrics.json
        self.step_model = step_model
        self.loss_scale = dist.world_size  # DDP averages gradients over ranks; undo it so the sum / B is exact
        model.train()

    def step(self, data: TrainingData, targets: torch.Tensor, rows: Rows, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(rows, slice):
            images = data.images[rows]  # (b, C, H, W) a view, no copy
            batch_targets = targets[0, rows]  # (b,)
        else:
            index = rows[0]  # (b,)
            images = data.images[index]  # (b, C, H, W) in the data's layout (index_select would return NCHW strides)
            batch_targets = targets[0].index_select(0, index)  # (b,)
        outputs, per_sample = self._forward_backward(images, batch_targets, global_batch)
        self.optimizer.step()
        loss_sum = per_sample.detach().sum()  # ()
        right = is_correct(outputs.detach(), batch_targets).sum()  # ()
        return loss_sum[None], right[None]  # (1,), (1,)

    def _forward_backward(self, images: torch.Tensor, targets: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of one batch (zeroed first); (outputs, per-sample losses)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            outputs = self.step_model(images)  # (b,) or (b, classes)
        per_sample = per_sample_loss(outputs.to(self.dtype), targets, self.config.loss, self.num_classes)  # (b,)
        (per_sample.sum() * (self.loss_scale / global_batch)).backward()
        return outputs, per_sample

    def snapshot(self) -> torch.Tensor:
        return self.conv.weight.detach().clone(memory_format=torch.contiguous_format)[None]  # (1, K, C, k, k)

    def forward_all(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[None]  # (1, b[, classes])

    def mode_module(self) -> nn.Module:
        return self.model

    def optimizer_states(self) -> list[dict[str, Any]]:
        return [self.optimizer.state_dict()]


class StackedStepper(Stepper):
    """S models of one configuration (differing in seed) as one vmapped stack with one optimizer."""

    def __init__(
        self, models: Sequence[nn.Module], config: TrainConfig, data: TrainingData, device: torch.device, dtype: torch.dtype,
        autocast: AbstractContextManager[Any], optimizer_states: Sequence[dict[str, Any]] | None,
    ):
        super().__init__(config, data.num_classes, dtype, autocast)
        data.info["memory_format"] = "contiguous"  # vmapped stacks keep the default layout
        self.models = [model.to(device) for model in models]
        self.params, self.buffers = stack_module_state(self.models)  # name -> (S, ...) on the device
        self.base = copy.deepcopy(self.models[0]).to("meta")  # the architecture, without storage
        self.weight_name = f"{first_layer_name(self.models[0])}.weight"
        self.trainable = [p for p in self.params.values() if p.requires_grad]
        self.optimizer = optimizer_for(config, self.trainable)
        if optimizer_states is not None:
            _load_optimizer_state(self.optimizer, lambda: stack_optimizer_states(optimizer_states, self.trainable))
        data.info["fused_update"] = uses_fused_update(self.optimizer)

        def one_model(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        self.own_batches = vmap(one_model, in_dims=(0, 0, 0))  # images (S, b, C, H, W): a batch per model
        self.same_batch = vmap(one_model, in_dims=(0, 0, None))  # images (b, C, H, W) shared by all models
        self.base.train()

    def step(self, data: TrainingData, targets: torch.Tensor, rows: Rows, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        num_models = self.num_models
        if isinstance(rows, slice):
            forward, images = self.same_batch, data.images[rows]  # (b, C, H, W) shared
            batch_targets = targets[:, rows]  # (S, b)
        else:
            forward, images = self.own_batches, data.images[rows]  # (S, b, C, H, W)
            batch_targets = targets.gather(1, rows)  # (S, b)
        b = batch_targets.shape[1]
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            outputs = forward(self.params, self.buffers, images)  # (S, b) or (S, b, classes)
        flat = outputs.to(self.dtype).reshape(num_models * b, *outputs.shape[2:])  # (S*b[, classes])
        flat_targets = batch_targets.reshape(-1)  # (S*b,)
        per_sample = per_sample_loss(flat, flat_targets, self.config.loss, self.num_classes).reshape(num_models, b)  # (S, b)
        (per_sample.sum() / global_batch).backward()  # sum over models of each model's batch-mean loss
        self.optimizer.step()
        loss_sums = per_sample.detach().sum(dim=1)  # (S,)
        right = is_correct(flat.detach(), flat_targets).reshape(num_models, b).sum(dim=1)  # (S,)
        return loss_sums, right

    def snapshot(self) -> torch.Tensor:
        return self.params[self.weight_name].detach().clone()  # (S, K, C, k, k)

    def forward_all(self, images: torch.Tensor) -> torch.Tensor:
        return self.same_batch(self.params, self.buffers, images)  # (S, b[, classes])

    def mode_module(self) -> nn.Module:
        return self.base

    def optimizer_states(self) -> list[dict[str, Any]]:
        state = self.optimizer.state_dict()
        return [optimizer_state_slice(state, self.trainable, s) for s in range(self.num_models)]

    def sync_models(self) -> None:
        stacked = {**self.params, **self.buffers}
        for s, model in enumerate(self.models):
            model.load_state_dict({name: value[s] for name, value in stacked.items()})


def optimizer_state_slice(state: dict[str, Any], stacked: Sequence[torch.Tensor], index: int) -> dict[str, Any]:
    """Model `index`'s optimizer state from the stacked optimizer's `state_dict()`.

    A state tensor shaped like its stacked parameter (S, ...) is sliced; anything else (Adam's step
    count, shared by all models) is kept as is. The result loads into a one-model optimizer.
    """
    per_model = {
        slot: {
            key: value[index] if torch.is_tensor(value) and value.shape == stacked[slot].shape else value
            for key, value in entry.items()
        }
        for slot, entry in state["state"].items()
    }
    return {"state": per_model, "param_groups": copy.deepcopy(state["param_groups"])}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: Callable[[], dict[str, Any]]) -> None:
    """Load a resumed optimizer state; a damaged one is a one-line LinearCNNInputError, not a traceback.

    Each state tensor shaped like its parameter gets the parameter's strides: a state saved from a
    stacked run (contiguous) resumed by a channels_last model would otherwise meet torch's fused
    update, which walks the two in memory order and pairs the wrong elements."""
    try:
        optimizer.load_state_dict(state())
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise LinearCNNInputError(
            f"resume: the checkpoint's optimizer state does not fit this run's optimizer ({type(exc).__name__}); "
            "resume with the settings it was trained with", parameter="resume",
        ) from None
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = optimizer.state.get(param, {})
            for key, value in entry.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    entry[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def stack_optimizer_states(states: Sequence[dict[str, Any]], stacked: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The inverse of `optimizer_state_slice`: one-model optimizer states -> the stacked optimizer's."""
    merged = {}
    for slot, entry in states[0]["state"].items():
        merged[slot] = {
            key: torch.stack([s["state"][slot][key] for s in states])
            if torch.is_tensor(value) and (len(states),) + tuple(value.shape) == tuple(stacked[slot].shape)
            else value
            for key, value in entry.items()
        }
    return {"state": merged, "param_groups": copy.deepcopy(states[0]["param_groups"])}


def make_stepper(
    models: Sequence[nn.Module], config: TrainConfig, data: TrainingData, device: torch.device, dist: Dist, dtype: torch.dtype,
    autocast_dtype: torch.dtype | None, optimizer_states: Sequence[dict[str, Any]] | None,
) -> Stepper:
    """A SingleStepper for one model, a StackedStepper for several (their optimizer states restored when given)."""
    autocast: AbstractContextManager[Any] = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    if len(models) == 1:
        state = None if optimizer_states is None else optimizer_states[0]
        return SingleStepper(models[0], config, data, device, dist, dtype, autocast, state)
    return StackedStepper(models, config, data, device, dtype, autocast, optimizer_states)


__all__ = [
    "SingleStepper",
    "StackedStepper",
    "Stepper",
    "fused_update",
    "make_stepper",
    "optimizer_for",
    "optimizer_state_slice",
    "seeded_model_for",
    "stack_optimizer_states",
    "uses_fused_update",
]

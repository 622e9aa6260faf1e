"""Several seeds trained together: one stacked model under `torch.func.vmap`, one optimizer.

    results = train_together([config_seed0, config_seed1, config_seed2])
    # what `linearcnn train --seeds 0,1,2 --together` runs (through `train_seeds`)

S models of one configuration that differ only in their seed (each its own initialisation, data
order and random-label draw, exactly as `linearcnn.train.train` draws them) are stacked with
`torch.func.stack_module_state` (every parameter and buffer gains a leading axis of size S) and
run as one by `vmap(functional_call)`. The loss is the sum of the S models' losses, so backward
gives every model its own gradient, and one optimizer over the stacked tensors is S independent
optimizers: SGD (momentum, weight decay) and Adam act elementwise. BatchNorm running statistics
are stacked buffers, updated per model. A step runs S forward passes as one batched call; the
batch of model s is the rows `order_s[lo:hi]` of the resident data.

Each seed writes out/seed{S}/checkpoint.pt in the format of a one-model run (its own slice of the
stacked parameters, buffers and optimizer state), so `fit`, `compare`, `validate` and `--resume`
(with or without `--together`) read it. Results equal one-after-another training up to float
rounding: the batched kernels sum in another order (tests: float64, relative 1e-10).

When it pays: `python benchmarks/bench_seeds.py` measures both ways on one device. On a 2-core CPU
3 VGG11-bn models (width 16) train at 0.70x the speed of one after another (batched convolutions
are slower there); the GPU measurement is pending (`benchmarks/gpu_checks.sh`).
Not combined with torchrun (DistributedDataParallel) or `--compile` (a one-line error each).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from linearcnn._files import atomic_save, atomic_write_text
from linearcnn.errors import LinearCNNInputError
from linearcnn.models import first_layer, first_layer_name
from linearcnn.device import resolve_device
from linearcnn.train import (
    METRIC_KEYS,
    METRICS_NAME,
    TrainConfig,
    TrainResult,
    _check_out_dir,
    _check_resume,
    _epoch_order,
    _evaluate,
    _is_correct,
    _load_dataset,
    _metrics_summary,
    _per_sample_loss,
    _precision,
    _Progress,
    _stack_snapshots,
    _test_now,
    book_segment,
    seeded_model_for,
    check_linear_lr,
    checkpoint_dict,
    load_test_dataset,
    load_training_checkpoint,
    model_spec,
    optimizer_for,
    prepare_test_data,
    prepare_training_data,
    record_test,
    training_targets,
)

# Fields that may differ between the models trained together.
PER_MODEL_FIELDS = ("seed", "label_seed", "out")


def check_together(configs: Sequence[TrainConfig]) -> None:
    """LinearCNNInputError unless these configs can train together (same settings but the seed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LinearCNNInputError("--together does not run under torchrun; drop --together (the seeds then train one after another, each with DDP)")
    first = configs[0]
    if first.compile:
        raise LinearCNNInputError("--together does not combine with --compile; drop one of them")
    reference = {k: v for k, v in dataclasses.asdict(first).items() if k not in PER_MODEL_FIELDS}
    for config in configs[1:]:
        other = {k: v for k, v in dataclasses.asdict(config).items() if k not in PER_MODEL_FIELDS}
        if other != reference:
            differing = sorted(k for k in reference if reference[k] != other[k])
            raise LinearCNNInputError(f"--together: the runs differ in {', '.join(differing)}; only the seed may differ")


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


def train_together(
    configs: Sequence[TrainConfig], *, dataset: Any = None, test_dataset: Any = None, progress: bool = False
) -> list[TrainResult]:
    """Train one model per config (configs differing only in seed, label_seed, out) together.

    Output folders are checked (and resume states read) before any training; see the module
    docstring. Returns one TrainResult per config, in order.
    """
    configs = [c.validate().resolved() for c in configs]
    if dataset is not None and getattr(dataset, "spec", None):
        configs = [dataclasses.replace(c, data=str(dataset.spec)) for c in configs]
    check_together(configs)
    first = configs[0]
    device = resolve_device(first.device)
    paths = [_check_out_dir(c, True) for c in configs]
    resumes = [
        load_training_checkpoint(p) if first.resume and p is not None and p.exists() else None for p in paths
    ]
    for state, config, path in zip(resumes, configs, paths):
        if state is not None:
            _check_resume(state, config, path)  # type: ignore[arg-type]
    positions = {None if r is None else (int(r["epoch"]), int(r["step"]), int(r["epoch_step"])) for r in resumes}
    if len(positions) > 1:
        raise LinearCNNInputError(
            "--resume --together: the seed folders hold checkpoints at different steps (or some none); "
            "resume without --together"
        )

    if dataset is None:
        dataset = _load_dataset(first)
        if test_dataset is None:
            test_dataset = load_test_dataset(first)
    dtype, autocast_dtype = _precision(first, device)
    data = prepare_training_data(first, dataset, device, dtype)  # images and classes, shared by all models
    test = prepare_test_data(first, test_dataset, data, device, dtype) if first.test else None
    if test is not None:
        data.info["test"] = test.info
    num_images, channels = data.images.shape[0], data.images.shape[1]
    draws = [training_targets(c, dataset.labels, num_images, data.num_classes, dtype) for c in configs]
    targets = torch.stack([t for t, _ in draws]).to(device)  # (S, N)
    for state, path in zip(resumes, paths):
        if state is not None and (state.get("data", {}).get("num_images") != num_images
                                  or state.get("model", {}).get("in_channels") != channels):
            raise LinearCNNInputError(f"--resume: checkpoint {str(path)!r} was trained on other data than {first.data!r}")

    models = [seeded_model_for(c, channels, data.num_classes, dtype) for c in configs]
    layer_name = first_layer_name(models[0])
    initial = [first_layer(m).weight.detach().clone() for m in models]  # S x (K, C, k, k) CPU
    for config, model in zip(configs, models):
        check_linear_lr(config, model, data.images)
    metrics: list[dict[str, Any]] = [{key: [] for key in METRIC_KEYS} for _ in configs]
    snapshot_steps: list[int] = []
    snapshot_weights: list[torch.Tensor] = []  # each (S, K, C, k, k) on the device
    epoch = step = epoch_step = 0
    partials = [{"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0} for _ in configs]
    resumed = resumes[0] is not None
    if resumed:
        for s, (state, model) in enumerate(zip(resumes, models)):
            model.load_state_dict(state["model_state_dict"])  # type: ignore[index]
            initial[s] = state["first_layer"]["initial_weight"].to(dtype)  # type: ignore[index]
            metrics[s] = {key: list(state["metrics"].get(key, [])) for key in METRIC_KEYS}  # type: ignore[index]
            partials[s] = dict(state["partial_epoch"])  # type: ignore[index]
            if draws[s][1] is not None and not torch.equal(state["random_labels"], draws[s][1]):  # type: ignore[index]
                raise LinearCNNInputError(f"--resume: checkpoint {str(paths[s])!r} holds other random labels than this run draws")
        steps_stored = [[int(x) for x in r["snapshots"]["steps"]] for r in resumes]  # type: ignore[index]
        if any(steps != steps_stored[0] for steps in steps_stored):
            raise LinearCNNInputError("--resume --together: the seed folders hold snapshots at different steps; resume without --together")
        snapshot_steps = steps_stored[0]
        snapshot_weights = [torch.stack([r["snapshots"]["weights"][i] for r in resumes]).to(device=device, dtype=dtype)  # type: ignore[index]
                            for i in range(len(snapshot_steps))]
        epoch, step, epoch_step = positions.pop()  # type: ignore[misc]

    for model in models:
        model.to(device)
    params, buffers = stack_module_state(models)  # name -> (S, ...) tensors on the device
    base = copy.deepcopy(models[0]).to("meta")  # the architecture, without storage
    weight_name = f"{layer_name}.weight"
    trainable_names = [name for name, p in params.items() if p.requires_grad]
    trainable = [params[name] for name in trainable_names]
    optimizer = optimizer_for(first, trainable)
    if resumed:
        optimizer.load_state_dict(stack_optimizer_states([r["optimizer_state_dict"] for r in resumes], trainable))  # type: ignore[index]
    elif first.snapshot_every > 0:
        snapshot_steps.append(0)
        snapshot_weights.append(params[weight_name].detach().clone())

    def one_model(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    own_batches = vmap(one_model, in_dims=(0, 0, 0))  # images (S, b, C, H, W): a batch per model
    same_batch = vmap(one_model, in_dims=(0, 0, None))  # images (b, C, H, W) shared by all models

    def shared_forward(images: torch.Tensor) -> torch.Tensor:
        return same_batch(params, buffers, images)

    num_models = len(configs)
    batch_size = min(first.batch_size, num_images)
    full_batch = batch_size >= num_images
    steps_per_epoch = math.ceil(num_images / batch_size)
    total_steps = first.steps if first.steps is not None else first.epochs * steps_per_epoch
    autocast = torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()

    def save(final: bool) -> None:
        state = optimizer.state_dict()
        for s, (config, path, model) in enumerate(zip(configs, paths, models)):
            model.load_state_dict({name: value[s] for name, value in {**params, **buffers}.items()})
            if path is None:
                continue
            checkpoint = checkpoint_dict(
                config=config, model=model, optimizer_state=optimizer_state_slice(state, trainable, s), layer_name=layer_name,
                initial_first_layer=initial[s], snapshot_steps=snapshot_steps, snapshot_weights=[w[s] for w in snapshot_weights],
                epoch=epoch, step=step, epoch_step=epoch_step, metrics=metrics[s], partial=partials[s],
                random_labels=draws[s][1], data_info=data.info, model_spec=model_spec(config, channels, data.num_classes),
            )
            atomic_save(path, lambda tmp, c=checkpoint: torch.save(c, tmp))
            summary = _metrics_summary(config, metrics[s], partials[s], epoch, step, device, 1, final)
            atomic_write_text(path.parent / METRICS_NAME, json.dumps(summary, indent=2) + "\n")

    seeds_text = ",".join(str(c.seed) for c in configs)
    last_save = time.perf_counter()
    base.train()
    with _Progress(progress, total_steps, step, f"{first.arch} seeds {seeds_text} (together)") as bar:
        while step < total_steps:
            orders = None if full_batch else torch.stack([_epoch_order(c.seed, epoch, num_images) for c in configs]).to(device)  # (S, N)
            steps_now = min(steps_per_epoch - epoch_step, total_steps - step)
            # Per-model running sums stay on the device; read once at the end of this segment.
            sums = torch.tensor([[p["loss_sum"], p["correct"], float(p["count"])] for p in partials], dtype=torch.float64, device=device)  # (S, 3)
            step_losses = torch.zeros(num_models, steps_now, dtype=torch.float64, device=device)  # (S, steps)
            started = time.perf_counter()
            for i in range(steps_now):
                batch = epoch_step + i
                lo, hi = batch * batch_size, min((batch + 1) * batch_size, num_images)
                b = hi - lo
                if orders is None:
                    forward, batch_images = same_batch, data.images[lo:hi]  # (b, C, H, W) shared
                    batch_targets = targets[:, lo:hi]  # (S, b)
                else:
                    index = orders[:, lo:hi]  # (S, b)
                    forward, batch_images = own_batches, data.images[index]  # (S, b, C, H, W)
                    batch_targets = targets.gather(1, index)  # (S, b)
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    outputs = forward(params, buffers, batch_images)  # (S, b) or (S, b, classes)
                flat = outputs.to(dtype).reshape(num_models * b, *outputs.shape[2:])  # (S*b[, classes])
                per_sample = _per_sample_loss(flat, batch_targets.reshape(-1), first.loss, data.num_classes).reshape(num_models, b)  # (S, b)
                (per_sample.sum() / b).backward()  # sum over models of each model's batch-mean loss
                optimizer.step()
                batch_loss = per_sample.detach().sum(dim=1)  # (S,)
                right = _is_correct(flat.detach(), batch_targets.reshape(-1)).reshape(num_models, b).sum(dim=1)  # (S,)
                sums += torch.stack([batch_loss.to(torch.float64), right.to(torch.float64), torch.full_like(batch_loss, b, dtype=torch.float64)], dim=1)
                step_losses[:, i] = batch_loss / b
                step += 1
                if first.snapshot_every > 0 and step % first.snapshot_every == 0:
                    snapshot_steps.append(step)
                    snapshot_weights.append(params[weight_name].detach().clone())
                bar.advance()
            epoch_step += steps_now
            elapsed_segment = time.perf_counter() - started
            evaluate = _test_now(first, test, epoch_step == steps_per_epoch, epoch + 1, step >= total_steps)
            test_sums = (
                _evaluate(shared_forward, base, test, first, data.num_classes, dtype, autocast, models=num_models)  # type: ignore[arg-type]
                if evaluate else torch.zeros(num_models, 2, dtype=torch.float64, device=device)
            )  # (S, 2)
            totals_host = torch.cat([sums, test_sums, step_losses], dim=1).cpu().tolist()  # SYNC: once per segment
            epoch_done = epoch_step == steps_per_epoch
            if epoch_done:
                epoch, epoch_step = epoch + 1, 0
            for s in range(num_models):
                partials[s] = book_segment(
                    metrics[s], totals_host[s], step=step, epoch=epoch if epoch_done else None,
                    elapsed=elapsed_segment + float(partials[s]["seconds"]), test=test if evaluate else None, lr=first.lr,
                )
            if epoch_done:
                losses = " ".join(f"{m['loss'][-1]:.3g}" for m in metrics)
                bar.stats(f"epoch {epoch} losses {losses}")
            if step < total_steps and time.perf_counter() - last_save >= first.checkpoint_seconds:
                save(final=False)
                last_save = time.perf_counter()
        if test is not None and (not metrics[0]["test_step"] or metrics[0]["test_step"][-1] != step):
            # resumed from runs that had ended without a test pass: one now, at their last step
            sums = _evaluate(shared_forward, base, test, first, data.num_classes, dtype, autocast, models=num_models).cpu().tolist()  # type: ignore[arg-type]
            for s in range(num_models):
                record_test(metrics[s], step, sums[s], test)
        save(final=True)

    results = []
    for s, (config, model) in enumerate(zip(configs, models)):
        results.append(TrainResult(
            config=config, model=model, first_layer=layer_name, initial_first_layer=initial[s].detach().cpu(),
            snapshot_steps=torch.tensor(snapshot_steps, dtype=torch.int64),
            snapshot_weights=_stack_snapshots([w[s] for w in snapshot_weights], initial[s]),
            metrics=metrics[s], random_labels=draws[s][1], checkpoint_path=paths[s], device=str(device),
            epoch=epoch, step=step, data_info=dict(data.info), partial=dict(partials[s]),
        ))
    return results


__all__ = ["PER_MODEL_FIELDS", "check_together", "optimizer_state_slice", "stack_optimizer_states", "train_together"]


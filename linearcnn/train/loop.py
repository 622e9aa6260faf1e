"""The training loop, once: one model (`train`) or a vmapped stack of seeds (`train_together`).

What one run does, in order (PAPER.md section 4 "training setting" for the defaults: plain SGD,
lr 0.01, batch 256, no augmentation, per-channel normalisation):

1. Check the configuration and the output folders, read the checkpoints to resume (before any
   heavy work).
2. Load the data, normalise it once per channel and keep it resident on the training device
   (`linearcnn.train.device_data`); build each model's targets (`linearcnn.train.targets`).
3. Build every model from its seed (`linearcnn.models.build_seeded_model`), check that `lr` is
   stable for the linear models (`linearcnn.train.stability`), restore a resumed run, and hand
   the models to a `Stepper` (`linearcnn.train.stepper`: one model, or S seeds stacked).
4. Train in segments: a segment is the rest of an epoch (or of the run). The data order of epoch
   e is a permutation drawn from (seed, e) alone, so an interrupted run resumes exactly;
   full-batch runs use the data in order. Loss and accuracy sums stay on the device and are read
   once per segment (with the test pass's sums, the per-step losses and the first layer's
   displacement ||W - W0|| / ||W0||, computed on the device): the one host sync. The stopping
   rule (`linearcnn.train.stopping`: epochs, steps, or "until the train accuracy reaches A" /
   "until the loss falls to L" with a cap of `max_epochs`) is checked at each epoch end, after
   `book_segment`, where every model's metrics are on the host. A stack of seeds stops when every
   model has reached its target (or at the cap); each records where it first reached it, and the
   ones that reached it earlier train on with the stack until then.
5. Every `checkpoint_seconds` (at a segment end) and at the end, write each model's
   `checkpoint.pt` and `metrics.json` atomically (rank 0 only; `linearcnn.train.run_files`).

Losses. `linear`: L = (1/N) sum_x (f(x) - y(x))^2 with f the mean over filters and locations, so
each filter moves by -lr * (2/K) * (A wbar - b) per full-batch step (A, b as in PAPER.md section 2
with the mean-patch vectors of `linearcnn.patches.mean_patches`). `linear-multi` with MSE: the
mean over classes and images of (out - onehot)^2. Deep nets: cross-entropy (override with `loss`).

Speed: data resident on the device, no host sync inside a step (every sync point is commented
SYNC), channels_last for the deep nets (CUDA and CPU), torch's fused optimizer update on both
(`stepper.fused_update`; recorded as `fused_update`), on the CPU an allocator that keeps freed
memory for the next step (`allocator`; recorded as `cpu_allocator`), bf16 autocast and cudnn autotuning on CUDA,
`torch.compile` when asked (`TrainConfig` says why not by default; recorded as `compiled`).
Distributed: see `linearcnn.train.distributed`.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from linearcnn.checkpoints.training import stack_snapshots
from linearcnn.device import resolve_device
from linearcnn.errors import LinearCNNInputError
from linearcnn.first_layer_init import check_stats_fit_layer, initialise_first_layer, parse_first_layer_init, plan_first_layer_init
from linearcnn.models import first_layer, first_layer_name
from linearcnn.patches import PatchStats, patch_stats
from linearcnn.train.allocator import keep_freed_memory
from linearcnn.train.config import TrainConfig, check_together, precision_for
from linearcnn.train.device_data import (
    HeldOutData,
    TrainingData,
    epoch_order,
    load_test_dataset,
    load_training_dataset,
    prepare_test_data,
    prepare_training_data,
)
from linearcnn.train.distributed import Dist, distributed, use_sync_bn
from linearcnn.train.metrics import Metrics, Partial, book_segment, empty_metrics, empty_partial, record_test, test_now
from linearcnn.train.progress import Progress
from linearcnn.train.run_files import OutLock, check_out_dir, check_resume_data, read_resume_state, write_run
from linearcnn.train.stability import check_linear_lr
from linearcnn.train.stepper import Stepper, make_stepper, seeded_model_for
from linearcnn.train.stopping import epoch_reaches_target, first_target_epoch, step_bound, stop_record
from linearcnn.train.targets import training_targets

if TYPE_CHECKING:
    from linearcnn.data import ImageDataset


@dataclass
class TrainResult:
    """What `train` returns (one per seed from `train_seeds`); the checkpoint on disk holds the same."""

    config: TrainConfig  # resolved (defaults filled in)
    model: nn.Module  # the plain trained model, on `device`
    first_layer: str  # its first conv's module name ("conv", "features.0", "conv1")
    initial_first_layer: torch.Tensor  # (K, C, k, k) CPU, the weights at step 0
    snapshot_steps: torch.Tensor  # (S,) int64
    snapshot_weights: torch.Tensor  # (S, K, C, k, k) CPU
    metrics: dict[str, Any]
    random_labels: torch.Tensor | None
    checkpoint_path: Path | None  # None when no `out` was given (or on ranks > 0)
    device: str
    world_size: int = 1
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    data_info: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=empty_partial)
    stop: dict[str, Any] = field(default_factory=dict)  # `linearcnn.train.stopping.stop_record`
    converged: bool = False  # the stopping rule's target (or the epochs / steps) was reached


def train(config: TrainConfig, *, dataset: ImageDataset | None = None, test_dataset: ImageDataset | None = None,
          progress: bool = False) -> TrainResult:
    """Train one model (seed `config.seed`) as configured; see the module docstring.

    `dataset` replaces loading `config.data` (its `spec` is recorded); `test_dataset` replaces
    loading the test split of `config.data` (with `dataset` given and no `test_dataset`, nothing is
    evaluated). With `config.out`, writes `out/checkpoint.pt` and `out/metrics.json` (rank 0).
    `progress` shows a progress bar (pass `progress_enabled(quiet)`). Under torchrun the model is
    trained with DistributedDataParallel.
    """
    config = _with_data_spec([config.validate().resolved()], dataset)[0]
    device = resolve_device(config.device)
    if config.sync_bn == "on" and device.type != "cuda":  # checked before anything is written
        raise LinearCNNInputError(
            f"sync_bn on needs CUDA (torch's SyncBatchNorm does not run on {device.type}); use sync_bn auto or off", parameter="sync_bn"
        )
    with distributed(device) as (dist, device):
        return _run([config], dataset, test_dataset, progress and dist.is_main, device, dist)[0]


def train_together(configs: Sequence[TrainConfig], *, dataset: ImageDataset | None = None, test_dataset: ImageDataset | None = None,
                   progress: bool = False) -> list[TrainResult]:
    """Train one model per config (configs differing only in seed, label_seed, out) as one vmapped stack.

    Each writes its own out/checkpoint.pt in the format of a one-model run, so `--resume` works
    with or without `together`. Not under torchrun, not with `compile` (LinearCNNInputError).
    Returns one TrainResult per config, in order.
    """
    resolved = _with_data_spec([c.validate().resolved() for c in configs], dataset)
    check_together(resolved)
    return _run(resolved, dataset, test_dataset, progress, resolve_device(resolved[0].device), Dist())


def _with_data_spec(configs: list[TrainConfig], dataset: ImageDataset | None) -> list[TrainConfig]:
    """The configs recording where a given dataset's images came from."""
    if dataset is None or not getattr(dataset, "spec", None):
        return configs
    return [dataclasses.replace(c, data=str(dataset.spec)) for c in configs]


@dataclass
class _Position:
    """Where the run stands, and what each of its S models has recorded so far."""

    metrics: list[Metrics]
    partials: list[Partial]
    snapshot_steps: list[int] = field(default_factory=list)
    snapshot_weights: list[torch.Tensor] = field(default_factory=list)  # each (S, K, C, k, k) on the device
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    epoch_step: int = 0  # steps done inside the current epoch


def _resume(
    resumes: list[dict[str, Any] | None], paths: list[Path | None], configs: list[TrainConfig], models: list[nn.Module],
    initial: list[torch.Tensor], data: TrainingData, draws: list[torch.Tensor | None], device: torch.device, dtype: torch.dtype,
) -> _Position | None:
    """Load the resumed checkpoints into the (CPU) models and `initial`; their position, or None for a fresh run."""
    positions = {None if r is None else (int(r["epoch"]), int(r["step"]), int(r["epoch_step"])) for r in resumes}
    if len(positions) > 1:
        raise LinearCNNInputError(
            "resume together: the seed folders hold checkpoints at different steps (or some none); resume without together",
            parameter="resume",
        )
    (position,) = positions
    if position is None:
        return None
    states = [r for r in resumes if r is not None]  # all of them
    snapshot_steps = [[int(x) for x in r["snapshots"]["steps"]] for r in states]
    if any(steps != snapshot_steps[0] for steps in snapshot_steps):
        raise LinearCNNInputError(
            "resume together: the seed folders hold snapshots at different steps; resume without together", parameter="resume"
        )
    for s, (state, path) in enumerate(zip(states, paths)):
        assert path is not None  # the checkpoint was read from it
        check_resume_data(state, path, configs[s], data, draws[s], initial[s])
        try:
            models[s].load_state_dict(state["model_state_dict"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # tensors of other shapes, missing keys
            raise LinearCNNInputError(
                f"resume: checkpoint {str(path)!r} holds model weights that do not fit this model ({type(exc).__name__}); "
                "resume with the settings it was trained with", parameter="resume",
            ) from None
        initial[s] = state["first_layer"]["initial_weight"].to(dtype)
    try:
        torch.set_rng_state(states[0]["rng_state"]["torch"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise LinearCNNInputError(
            f"resume: checkpoint {str(paths[0])!r} holds a malformed random-number state ({type(exc).__name__})", parameter="resume"
        ) from None
    epoch, step, epoch_step = position
    return _Position(
        metrics=[_resumed_metrics(r["metrics"]) for r in states],
        partials=[dict(r["partial_epoch"]) for r in states],
        snapshot_steps=snapshot_steps[0],
        snapshot_weights=[torch.stack([r["snapshots"]["weights"][i] for r in states]).to(device=device, dtype=dtype)  # (S, K, C, k, k)
                          for i in range(len(snapshot_steps[0]))],
        epoch=epoch, step=step, epoch_step=epoch_step,
    )


def _resumed_metrics(stored: dict[str, Any]) -> Metrics:
    """A checkpoint's metrics book; per-epoch lists newer than the checkpoint are nan for its epochs (kept aligned with `epoch`)."""
    metrics = {key: list(stored.get(key, [])) for key in empty_metrics()}
    missing = len(metrics["epoch"]) - len(metrics["first_layer_displacement"])
    metrics["first_layer_displacement"] = [float("nan")] * missing + metrics["first_layer_displacement"]
    return metrics


def _run(
    configs: list[TrainConfig], dataset: ImageDataset | None, test_dataset: ImageDataset | None, show_progress: bool,
    device: torch.device, dist: Dist,
) -> list[TrainResult]:
    """Train the S models of `configs` (resolved; equal but for the seed when S > 1) in one loop,
    each output folder locked for the whole run (a second run into it exits with a one-line error)."""
    locks: list[OutLock] = []
    try:
        paths = [check_out_dir(c, dist.is_main, locks=locks) for c in configs]
        return _run_in(paths, configs, dataset, test_dataset, show_progress, device, dist)
    finally:
        for lock in locks:
            lock.release()


def _run_in(
    paths: list[Path | None], configs: list[TrainConfig], dataset: ImageDataset | None, test_dataset: ImageDataset | None,
    show_progress: bool, device: torch.device, dist: Dist,
) -> list[TrainResult]:
    first = configs[0]
    resumes = [read_resume_state(c, p) for c, p in zip(configs, paths)]
    if dataset is None:
        dataset = load_training_dataset(first)
        if test_dataset is None:
            test_dataset = load_test_dataset(first)
    dtype, autocast_dtype = precision_for(first, device)
    data = prepare_training_data(first, dataset, device, dtype)  # images and classes, shared by all models
    data.info["cpu_allocator"] = keep_freed_memory() if device.type == "cpu" else None  # recorded like the layout
    test = prepare_test_data(first, test_dataset, data, device, dtype) if first.test else None
    if test is not None:
        data.info["test"] = test.info
    num_images, channels = data.images.shape[0], data.images.shape[1]
    draws = [(data.targets, data.random_labels)] + [
        training_targets(c, dataset.labels, num_images, data.num_classes, dtype) for c in configs[1:]
    ]
    targets = torch.stack([t.to(device) for t, _ in draws])  # (S, N)
    random_labels = [labels for _, labels in draws]

    models = [seeded_model_for(c, channels, data.num_classes, dtype) for c in configs]
    if use_sync_bn(first, models[0], device, dist.world_size):
        models = [nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in models]  # same parameters and state-dict keys
    layer_name = first_layer_name(models[0])
    planned_steps = step_bound(first, math.ceil(num_images / min(first.batch_size, num_images)))  # the cap, with a target
    init_records = _initialise_first_layers(configs, models, data, planned_steps, show_progress)
    initial = [first_layer(m).weight.detach().clone() for m in models]  # S x (K, C, k, k) CPU
    for config, model in zip(configs, models):
        check_linear_lr(config, model, data.images)
    at = _resume(resumes, paths, configs, models, initial, data, random_labels, device, dtype)
    optimizer_states = None if at is None else [r["optimizer_state_dict"] for r in resumes if r is not None]
    stepper = make_stepper(models, first, data, device, dist, dtype, autocast_dtype, optimizer_states)
    if at is None:
        at = _Position(metrics=[empty_metrics() for _ in configs], partials=[empty_partial() for _ in configs])
        if first.snapshot_every > 0:
            at.snapshot_steps.append(0)
            at.snapshot_weights.append(stepper.snapshot())

    def save(final: bool) -> None:
        stepper.sync_models()
        if not dist.is_main or all(p is None for p in paths):
            return
        for s, (config, path, optimizer_state) in enumerate(zip(configs, paths, stepper.optimizer_states())):
            if path is not None:
                write_run(
                    path, config=config, model=stepper.models[s], optimizer_state=optimizer_state, layer_name=layer_name,
                    initial_first_layer=initial[s], snapshot_steps=at.snapshot_steps, snapshot_weights=[w[s] for w in at.snapshot_weights],
                    epoch=at.epoch, step=at.step, epoch_step=at.epoch_step, metrics=at.metrics[s], partial=at.partials[s],
                    random_labels=random_labels[s], data=data, device=device, world_size=dist.world_size, final=final,
                    stop=stop_record(config, at.metrics[s], at.step), first_layer_init=init_records[s],
                )

    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # static shapes: let cuDNN pick the fastest kernels
    try:
        _loop(stepper, configs, data, targets, test, at, dist, save, show_progress,
              torch.stack(initial).to(device=device, dtype=torch.float64))  # (S, K, C, k, k) W0
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    stops = [stop_record(config, at.metrics[s], at.step) for s, config in enumerate(configs)]
    return [
        TrainResult(
            config=config, model=stepper.models[s], first_layer=layer_name, initial_first_layer=initial[s].detach().cpu(),
            snapshot_steps=torch.tensor(at.snapshot_steps, dtype=torch.int64),
            snapshot_weights=stack_snapshots([w[s] for w in at.snapshot_weights], initial[s]),
            metrics=at.metrics[s], random_labels=random_labels[s], checkpoint_path=paths[s] if dist.is_main else None,
            device=str(device), world_size=dist.world_size, epoch=at.epoch, step=at.step, data_info=dict(data.info),
            partial=dict(at.partials[s]), stop=stops[s], converged=bool(stops[s]["reached"]),
        )
        for s, config in enumerate(configs)
    ]


def _initialise_first_layers(configs: list[TrainConfig], models: list[nn.Module], data: TrainingData, planned_steps: int,
                             show_progress: bool) -> list[dict[str, Any]]:
    """Apply the runs' `first_layer_init` (shared by the S configs) to each model, from its own seed; one record each.

    The patch statistics are measured once, on the training images as the loop holds them (normalised,
    on the device), or read from `init_stats`; a formula without tau gets the tau predicted for the
    planned steps (`planned_steps`: the cap, for a run with a target).
    """
    first = configs[0]
    spec = parse_first_layer_init(first.first_layer_init)
    if spec.name == "default":
        return [plan_first_layer_init(spec, None, lr=first.lr, planned_steps=0).record() for _ in configs]
    kernel = int(first_layer(models[0]).weight.shape[-1])
    if first.init_stats is not None:
        stats = PatchStats.load(first.init_stats)
        stats.data_spec = stats.data_spec or first.init_stats
    else:
        stats = patch_stats(data.images, kernel, centered=False, device=data.images.device)
        stats.data_spec = first.data
    check_stats_fit_layer(stats, tuple(first_layer(models[0]).weight.shape), first.init_stats or first.data)
    plan = plan_first_layer_init(spec, stats, lr=first.lr, planned_steps=planned_steps)
    if show_progress:
        print(plan.describe(), file=sys.stderr)
    records = []
    for config, model in zip(configs, models):
        residual = initialise_first_layer(model, plan, config.seed)
        records.append({**plan.record(), "frame_residual": residual})
    return records


def _loop(
    stepper: Stepper, configs: list[TrainConfig], data: TrainingData, targets: torch.Tensor, test: HeldOutData | None, at: _Position,
    dist: Dist, save: Callable[[bool], None], show_progress: bool, initial: torch.Tensor,
) -> None:
    """Train from `at` to the end of the run, in segments (module docstring, step 4); `at` is updated in place.

    `initial`: the S first layers at step 0, (S, K, C, k, k) float64 on the device.
    """
    first, num_models, device = configs[0], len(configs), data.images.device
    num_images = data.images.shape[0]
    batch_size = min(first.batch_size, num_images)
    full_batch = batch_size >= num_images
    steps_per_epoch = math.ceil(num_images / batch_size)
    total_steps = step_bound(first, steps_per_epoch)  # the cap, with a target
    initial_norms = initial.flatten(1).norm(dim=1)  # (S,) ||W0||_F
    # Read from the metrics so far: a resumed run that has reached its target trains no further.
    reached = [first_target_epoch(c, m) is not None for c, m in zip(configs, at.metrics)]
    if at.step == 0 and total_steps > 0:
        save(False)  # a fresh run's step-0 checkpoint: killed at any moment, it can be resumed
    last_save = time.perf_counter()
    with StopSignals() as signals, Progress(show_progress, total_steps, at.step, _title(configs)) as bar:
        while at.step < total_steps and not all(reached):
            orders = None if full_batch else torch.stack([epoch_order(c.seed, at.epoch, num_images) for c in configs]).to(device)  # (S, N)
            steps_now = min(steps_per_epoch - at.epoch_step, total_steps - at.step)
            # Running sums stay on the device; they are read once, at the end of this segment.
            carried = [[p["loss_sum"], p["correct"], float(p["count"])] if dist.is_main else [0.0, 0.0, 0.0] for p in at.partials]
            sums = torch.tensor(carried, dtype=torch.float64, device=device)  # (S, 3) loss sum, number right, images
            step_losses = torch.zeros(num_models, steps_now, dtype=torch.float64, device=device)  # (S, steps) local sum / B
            started = time.perf_counter()
            done = steps_now  # steps of this segment actually taken (fewer when a stop signal came)
            for i in range(steps_now):
                batch = at.epoch_step + i
                lo, hi = batch * batch_size, min((batch + 1) * batch_size, num_images)
                shard_lo, shard_hi = dist.shard(lo, hi)  # the global batch in world_size contiguous shards: this rank's
                rows = slice(shard_lo, shard_hi) if orders is None else orders[:, shard_lo:shard_hi]  # (S, b)
                loss_sums, right = stepper.step(data, targets, rows, hi - lo)  # (S,), (S,)
                count = torch.full_like(loss_sums, shard_hi - shard_lo, dtype=torch.float64)  # (S,)
                sums += torch.stack([loss_sums.to(torch.float64), right.to(torch.float64), count], dim=1)  # (S, 3)
                step_losses[:, i] = loss_sums / (hi - lo)
                at.step += 1
                if first.snapshot_every > 0 and at.step % first.snapshot_every == 0:
                    at.snapshot_steps.append(at.step)
                    at.snapshot_weights.append(stepper.snapshot())
                bar.advance()
                if signals.received is not None:  # SIGTERM / SIGINT: end the segment here, save, stop
                    done = i + 1
                    break
            step_losses = step_losses[:, :done]
            at.epoch_step += done
            elapsed = time.perf_counter() - started  # training time of this segment, without the test pass
            epoch_done = at.epoch_step == steps_per_epoch
            tested = test if test_now(first, test, epoch_done, at.epoch + 1, at.step >= total_steps) else None
            test_sums = (
                stepper.evaluate(tested, dist) if tested is not None else torch.zeros(num_models, 2, dtype=torch.float64, device=device)
            )  # (S, 2) test loss sum, number right
            moved = (stepper.snapshot().to(torch.float64) - initial).flatten(1).norm(dim=1) / initial_norms  # (S,) ||W - W0|| / ||W0||
            displacement = moved[:, None] if dist.is_main else torch.zeros_like(moved)[:, None]  # (S, 1) rank 0's: the sum is exact
            totals = dist.all_reduce(torch.cat([sums, test_sums, displacement, step_losses], dim=1))  # (S, 6 + steps) one collective
            totals_host = totals.cpu().tolist()  # SYNC: the one host-device sync of this segment
            if epoch_done:
                at.epoch, at.epoch_step = at.epoch + 1, 0
            for s in range(num_models):
                at.partials[s] = book_segment(
                    at.metrics[s], totals_host[s], step=at.step, epoch=at.epoch if epoch_done else None,
                    elapsed=elapsed + float(at.partials[s]["seconds"]), test=tested, lr=first.lr,
                )
            if epoch_done:
                bar.stats(_epoch_stats(at.epoch, at.metrics))
                # The stopping rule, once per epoch end, on the metrics just booked (already on the host).
                reached = [r or epoch_reaches_target(c, m["loss"][-1], m["accuracy"][-1]) for r, c, m in zip(reached, configs, at.metrics)]
            if signals.received is not None:
                save(False)
                raise TrainingStopped(f"training stopped by {signals.received} at step {at.step}; its checkpoint is saved, "
                                      "continue it with resume")
            if at.step < total_steps and not all(reached) and time.perf_counter() - last_save >= first.checkpoint_seconds:
                save(False)
                last_save = time.perf_counter()
        if test is not None and (not at.metrics[0]["test_step"] or at.metrics[0]["test_step"][-1] != at.step):
            # stopped at its target before the last epoch, or resumed from a run that had ended without a
            # test pass: one now, at its last step
            rows_host = dist.all_reduce(stepper.evaluate(test, dist)).cpu().tolist()  # SYNC: once
            for s in range(num_models):
                record_test(at.metrics[s], at.step, rows_host[s], test)
        save(True)


class TrainingStopped(LinearCNNInputError):
    """A run stopped by SIGTERM or SIGINT after saving its checkpoint (the CLI: one line, exit code 2)."""


class StopSignals:
    """While training, SIGTERM and SIGINT only note that a stop was asked for (`received`): the loop
    ends the current segment after the step in progress, saves, and raises `TrainingStopped`. A
    second signal acts as usual. Installed only in the main thread (Python's rule for handlers)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:  # asked twice: give up waiting
            signal.signal(number, self._previous.get(number, signal.SIG_DFL))
            signal.raise_signal(number)
            return
        self.received = signal.Signals(number).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}


def iter_first_layers(result: TrainResult) -> Iterator[tuple[int, torch.Tensor]]:
    """(step, first-layer weights (K, C, k, k)) for every snapshot of a result, in step order."""
    for step, weights in zip(result.snapshot_steps.tolist(), result.snapshot_weights):
        yield int(step), weights


def _title(configs: Sequence[TrainConfig]) -> str:
    if len(configs) == 1:
        return f"{configs[0].arch} seed {configs[0].seed}"
    return f"{configs[0].arch} seeds {','.join(str(c.seed) for c in configs)} (together)"


def _epoch_stats(epoch: int, metrics: Sequence[Metrics]) -> str:
    if len(metrics) == 1:
        return f"epoch {epoch} loss {metrics[0]['loss'][-1]:.4g} acc {metrics[0]['accuracy'][-1]:.3f}"
    return f"epoch {epoch} losses {' '.join(format(m['loss'][-1], '.3g') for m in metrics)}"


__all__ = ["TrainResult", "TrainingStopped", "iter_first_layers", "train", "train_together"]

"""A run's output folder: checking it before any heavy work, resuming from it, writing to it.

`out/checkpoint.pt` (format: `linearcnn.checkpoints.training`) and `out/metrics.json` are written
atomically, by rank 0 only. A checkpoint resumes a run only under the same settings
(`RUN_CONTROL_FIELDS` may differ) and on the same data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linearcnn._files import atomic_write_stream, atomic_write_text, check_writable_file, write_refusal
from linearcnn.checkpoints.training import CHECKPOINT_NAME, checkpoint_dict, load_training_checkpoint, model_spec
from linearcnn.errors import LinearCNNInputError
from linearcnn.train.config import RUN_CONTROL_FIELDS, TrainConfig
from linearcnn.train.device_data import TrainingData
from linearcnn.train.metrics import METRICS_NAME, Metrics, Partial, metrics_summary


def checkpoint_path_for(out: str | os.PathLike[str]) -> Path:
    """Where a run writing to `out` keeps its checkpoint: out/checkpoint.pt."""
    return Path(out) / CHECKPOINT_NAME


LOCK_NAME = ".lock"  # in the output folder; holds the pid of the run that trains into it


class OutLock:
    """An exclusive lock on a run's output folder, held while the run trains into it.

    `fcntl.flock` on `out/.lock`: the operating system drops it when the process ends however it
    ends (kill -9 included), so a stale lock file never blocks a later `resume`; a normal end
    removes the file. On systems without `fcntl` there is no lock.
    """

    def __init__(self, out: Path) -> None:
        self.fd: int | None = None
        self.path = out / LOCK_NAME
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        try:
            self._lock(out, fcntl)
        except OSError as exc:  # a full disk or read-only folder: one line, not a traceback
            error = write_refusal(self.path, exc)
            if error is None:
                raise
            self.release()  # the lock file we made, if any, goes too
            raise error from None

    def _lock(self, out: Path, fcntl: Any) -> None:
        for _ in range(100):  # retried only when the holder removed the file just as we locked it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise LinearCNNInputError(
                    f"out {str(out)!r} is in use by another training run (process {holder}); wait for it to end or choose another out",
                    parameter="out",
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return
            os.close(fd)  # we locked a file its holder had just removed: lock the new one
        raise LinearCNNInputError(f"out {str(out)!r}: its lock file keeps changing; expected one run at a time", parameter="out")

    def release(self) -> None:
        """Remove the lock file (while still holding it), then unlock: the folder holds only the run's files."""
        if self.fd is not None:
            import fcntl

            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def check_out_dir(config: TrainConfig, is_main: bool, *, locks: list[OutLock] | None = None) -> Path | None:
    """Create/check the output folder before any heavy work; return the checkpoint path (None without `out`).

    With `locks`, the folder is locked first (on the main process) and the lock appended: the
    caller releases it when the run ends. The checks below then see no other run's files appear.
    """
    if config.out is None:
        if config.resume:
            raise LinearCNNInputError("resume needs out: the folder holding the checkpoint to continue", parameter="resume")
        return None
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise LinearCNNInputError(f"out {str(out)!r} is a file; expected a folder", parameter="out")
    if is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LinearCNNInputError(
                f"out {str(out)!r} cannot be created ({exc.strerror or exc}); choose a writable folder", parameter="out"
            ) from None
    if is_main and locks is not None:
        locks.append(OutLock(out))
    path = checkpoint_path_for(out)
    if is_main:
        try:
            check_writable_file(path, "out checkpoint")
        except LinearCNNInputError as error:
            raise LinearCNNInputError(str(error), parameter="out") from None
    if path.exists() and not (config.resume or config.overwrite):
        raise LinearCNNInputError(
            f"out {str(out)!r} already holds {CHECKPOINT_NAME}; pass resume to continue it, overwrite to replace it, or another out",
            parameter="out",
        )
    return path


def read_resume_state(config: TrainConfig, path: Path | None) -> dict[str, Any] | None:
    """The checkpoint a `resume` run continues (None: nothing to resume), checked against `config`."""
    if not config.resume or path is None or not path.exists():
        return None
    checkpoint = load_training_checkpoint(path)
    check_resume_fields(checkpoint, path)
    stored = checkpoint.get("config", {})
    current = config.to_dict()
    defaults = TrainConfig().to_dict()  # a field newer than the checkpoint had its default value then
    for key in current:
        if key in RUN_CONTROL_FIELDS:
            continue
        if stored.get(key, defaults[key]) != current[key]:
            raise LinearCNNInputError(
                f"resume: checkpoint {str(path)!r} was trained with {key}={stored.get(key, defaults[key])!r}, this run asks for "
                f"{key}={current[key]!r}; resume with the same settings or choose another out",
                parameter="resume",
            )
    return checkpoint


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_resume_fields(checkpoint: Mapping[str, Any], path: Path) -> None:
    """LinearCNNInputError (one line, naming the field) unless every field a resume reads is there
    with the type it needs: a damaged or hand-edited checkpoint is refused before anything runs."""
    first = checkpoint.get("first_layer", {})
    snapshots = checkpoint.get("snapshots")
    partial = checkpoint.get("partial_epoch")
    rng = checkpoint.get("rng_state")
    metrics = checkpoint.get("metrics")
    checks: list[tuple[str, bool]] = [
        ("epoch", _is_count(checkpoint.get("epoch"))),
        ("step", _is_count(checkpoint.get("step"))),
        ("epoch_step", _is_count(checkpoint.get("epoch_step"))),
        ("config", isinstance(checkpoint.get("config"), Mapping)),
        ("model", isinstance(checkpoint.get("model"), Mapping)),
        ("data", isinstance(checkpoint.get("data"), Mapping)),
        ("optimizer_state_dict", isinstance(checkpoint.get("optimizer_state_dict"), Mapping)),
        ("first_layer.initial_weight", isinstance(first.get("initial_weight"), torch.Tensor) and first["initial_weight"].ndim == 4),
        ("snapshots", isinstance(snapshots, Mapping) and isinstance(snapshots.get("steps"), torch.Tensor)
         and isinstance(snapshots.get("weights"), torch.Tensor) and snapshots["steps"].ndim == 1
         and snapshots["weights"].shape[:1] == snapshots["steps"].shape),
        ("metrics", isinstance(metrics, Mapping) and all(isinstance(v, list) for v in metrics.values())),
        ("partial_epoch", isinstance(partial, Mapping)
         and all(_is_number(partial.get(k)) for k in ("loss_sum", "correct", "count", "seconds"))),
        ("rng_state.torch", isinstance(rng, Mapping) and isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8),
        ("random_labels", checkpoint.get("random_labels") is None or isinstance(checkpoint.get("random_labels"), torch.Tensor)),
    ]
    for field, ok in checks:
        if not ok:
            raise LinearCNNInputError(
                f"resume: checkpoint {str(path)!r} has a missing or malformed field {field!r}; expected a checkpoint "
                "written by linearcnn train (start again with overwrite, or choose another out)",
                parameter="resume",
            )


def check_resume_data(
    checkpoint: dict[str, Any], path: Path, config: TrainConfig, data: TrainingData, random_labels: torch.Tensor | None,
    initial_first_layer: torch.Tensor,
) -> None:
    """LinearCNNInputError unless the checkpoint was trained on this data, these labels and this first-layer shape."""
    channels, num_images = data.images.shape[1], data.images.shape[0]
    stored_channels = checkpoint.get("model", {}).get("in_channels")
    if stored_channels != channels:
        raise LinearCNNInputError(
            f"resume: checkpoint {str(path)!r} is for {stored_channels}-channel images, data {config.data!r} has {channels}",
            parameter="resume",
        )
    stored_n = checkpoint.get("data", {}).get("num_images")
    if stored_n != num_images:
        raise LinearCNNInputError(
            f"resume: checkpoint {str(path)!r} was trained on {stored_n} images, data {config.data!r} has {num_images}", parameter="resume"
        )
    if initial_first_layer.shape != checkpoint["first_layer"]["initial_weight"].shape:
        raise LinearCNNInputError(f"resume: checkpoint {str(path)!r} has a first layer of another shape", parameter="resume")
    if random_labels is not None and not torch.equal(checkpoint["random_labels"], random_labels):
        raise LinearCNNInputError(f"resume: checkpoint {str(path)!r} holds other random labels than this run draws", parameter="resume")


def write_run(
    path: Path, *, config: TrainConfig, model: nn.Module, optimizer_state: dict[str, Any], layer_name: str,
    initial_first_layer: torch.Tensor, snapshot_steps: Sequence[int], snapshot_weights: Sequence[torch.Tensor], epoch: int, step: int,
    epoch_step: int, metrics: Metrics, partial: Partial, random_labels: torch.Tensor | None, data: TrainingData,
    device: torch.device, world_size: int, final: bool, stop: dict[str, Any], first_layer_init: dict[str, Any] | None = None,
) -> None:
    """Write `checkpoint.pt` and `metrics.json` of one model, each atomically (`stop`: `linearcnn.train.stopping.stop_record`)."""
    checkpoint = checkpoint_dict(
        config=config, model=model, optimizer_state=optimizer_state, layer_name=layer_name,
        initial_first_layer=initial_first_layer, snapshot_steps=snapshot_steps, snapshot_weights=snapshot_weights,
        epoch=epoch, step=step, epoch_step=epoch_step, metrics=metrics, partial=partial, random_labels=random_labels,
        data_info=data.info, model_spec=model_spec(config, data.images.shape[1], data.num_classes), stop=stop,
        first_layer_init=first_layer_init,
    )
    # a handle, not a path: torch.save reports a full disk as a RuntimeError about the stream position
    atomic_write_stream(path, lambda handle: torch.save(checkpoint, handle))
    summary = metrics_summary(config, metrics, partial, epoch, step, device, world_size, final, stop,
                              speed=data.info, first_layer_init=first_layer_init)
    atomic_write_text(path.parent / METRICS_NAME, json.dumps(summary, indent=2) + "\n")


__all__ = [
    "LOCK_NAME",
    "OutLock",
    "check_out_dir",
    "check_resume_data",
    "check_resume_fields",
    "checkpoint_path_for",
    "read_resume_state",
    "write_run",
]

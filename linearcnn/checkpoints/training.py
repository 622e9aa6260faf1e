"""Our own training-checkpoint format: its constants, the one writer and the one reader.

`linearcnn.train` writes a run's `checkpoint.pt` with `checkpoint_dict` and resumes it with
`load_training_checkpoint`; the measuring code (`linearcnn.checkpoints`) recognises the same
files by `CHECKPOINT_FORMAT` and checks them with `check_training_checkpoint`. A checkpoint holds
only tensors, primitives and nested dicts/lists, so it loads with `torch.load(weights_only=True)`
(and without torch: `_safe_unpickle.read_torch_save`, as the measuring code reads it),
and it carries everything needed to rebuild the model from the file alone (`model_from_checkpoint`):

    format, format_version          "linearcnn-checkpoint", 1
    model_state_dict                the plain model's weights and buffers (CPU)
    optimizer_state_dict            the optimizer's state (CPU)
    first_layer                     {"name": module name, "initial_weight": (K, C, k, k) at step 0,
                                     "init": how it was initialised (`linearcnn.first_layer_init`)}
    snapshots                       {"steps": (S,) int64, "weights": (S, K, C, k, k)}
    config, seed, versions          the run's configuration, its seed, the package versions
    epoch, step, epoch_step         the position reached; partial_epoch: running sums inside an epoch
    metrics, random_labels          per-epoch lists; the random-label draw (or None)
    stop, converged                 the stopping rule and where it was reached; whether it was (see
                                    `linearcnn.train.stopping`; absent in checkpoints older than it)
    rng_state, data, model          torch RNG state; the data's description; `model_spec`
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from linearcnn.errors import LinearCNNInputError
from linearcnn.records import versions

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import nn

CHECKPOINT_FORMAT = "linearcnn-checkpoint"
CHECKPOINT_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (CHECKPOINT_VERSION,)
CHECKPOINT_NAME = "checkpoint.pt"  # the file name inside a run's output folder


class ModelConfig(Protocol):
    """What the format needs from a run's configuration (`linearcnn.train.TrainConfig`, resolved)."""

    arch: str
    seed: int
    width: int | None
    kernel_size: int | None
    init_std: float
    readout: str

    def to_dict(self) -> dict[str, Any]: ...


def model_spec(config: ModelConfig, channels: int, num_classes: int) -> dict[str, Any]:
    """What `model_from_checkpoint` needs to rebuild the model (stored as the checkpoint's `model`)."""
    return {
        "arch": config.arch,
        "in_channels": int(channels),
        "num_classes": int(num_classes),
        "width": int(config.width),  # type: ignore[arg-type]
        "kernel_size": int(config.kernel_size),  # type: ignore[arg-type]
        "init_std": float(config.init_std),
        "trainable_readout": config.readout == "trainable",
    }


def stack_snapshots(weights: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """First-layer snapshots as one CPU tensor (S, K, C, k, k); (0, K, C, k, k) shaped like `like` when none."""
    import torch

    if not weights:
        return torch.zeros((0, *like.shape), dtype=like.dtype)  # (0, K, C, k, k)
    return torch.stack([w.detach().cpu() for w in weights])  # (S, K, C, k, k)


def _to_cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def checkpoint_dict(
    *, config: ModelConfig, model: nn.Module, optimizer_state: dict[str, Any], layer_name: str,
    initial_first_layer: torch.Tensor, snapshot_steps: Sequence[int], snapshot_weights: Sequence[torch.Tensor],
    epoch: int, step: int, epoch_step: int, metrics: Mapping[str, Sequence[Any]], partial: Mapping[str, Any],
    random_labels: torch.Tensor | None, data_info: Mapping[str, Any], model_spec: Mapping[str, Any],
    stop: Mapping[str, Any] | None = None, first_layer_init: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint in our format (see the module docstring); everything on the CPU."""
    import torch

    from linearcnn.models import unwrap_model

    plain = unwrap_model(model)
    rng_state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng_state["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_state_dict": {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()},
        "optimizer_state_dict": _to_cpu(optimizer_state),
        "first_layer": {"name": layer_name, "initial_weight": initial_first_layer.detach().cpu().contiguous(),
                        "init": dict(first_layer_init or {"name": "default", "value": "default"})},
        "snapshots": {
            "steps": torch.tensor(list(snapshot_steps), dtype=torch.int64),  # (S,)
            "weights": stack_snapshots(snapshot_weights, initial_first_layer.cpu()),  # (S, K, C, k, k)
        },
        "config": config.to_dict(),
        "seed": int(config.seed),
        "versions": versions(),
        "epoch": int(epoch),
        "step": int(step),
        "epoch_step": int(epoch_step),
        "partial_epoch": dict(partial),
        "metrics": {k: list(v) for k, v in metrics.items()},
        "stop": None if stop is None else dict(stop),
        "converged": None if stop is None else bool(stop["reached"]),
        "random_labels": None if random_labels is None else random_labels.cpu(),
        "rng_state": rng_state,
        "data": dict(data_info),
        "model": dict(model_spec),
    }


def is_training_checkpoint(obj: object) -> bool:
    """Whether a loaded object says it is in our format (its version is checked by `check_training_checkpoint`)."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def check_training_checkpoint(checkpoint: object, path: str | os.PathLike[str]) -> dict[str, Any]:
    """`checkpoint` (loaded from `path`) if it is one of ours in a supported version; LinearCNNInputError otherwise."""
    where = str(Path(path))
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise LinearCNNInputError(f"checkpoint {where!r} has format {found!r}; expected {CHECKPOINT_FORMAT!r}")
    version = checkpoint.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise LinearCNNInputError(
            f"checkpoint {where!r}: linearcnn format_version {version!r} is not supported; expected one of {list(SUPPORTED_VERSIONS)}"
        )
    first = checkpoint.get("first_layer")
    if (not isinstance(checkpoint.get("model_state_dict"), Mapping) or not isinstance(first, Mapping)
            or not isinstance(first.get("name"), str)):
        raise LinearCNNInputError(
            f"checkpoint {where!r}: linearcnn checkpoint lacks model_state_dict or first_layer.name; "
            "expected the keys written by linearcnn training"
        )
    return checkpoint


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one of our training checkpoints (weights_only, on the CPU), checking its format; LinearCNNInputError otherwise."""
    from linearcnn.checkpoints._torch_load import torch_load_raw

    path = Path(path)
    try:
        checkpoint = torch_load_raw(path, unsafe_load=False, mmap=False)  # not mapped: a resumed run rewrites this file
    except LinearCNNInputError:  # a refusal that already names the file and the reason
        raise
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r} cannot be read as a linearcnn training checkpoint ({type(exc).__name__})"
        ) from None
    return check_training_checkpoint(checkpoint, path)


def model_from_checkpoint(checkpoint: Mapping[str, Any]) -> nn.Module:
    """Rebuild the trained model (CPU, float32 unless trained in float64) from a checkpoint alone."""
    import torch

    from linearcnn.models import build_model

    spec = checkpoint["model"]
    model = build_model(
        spec["arch"], spec["in_channels"], spec["num_classes"], width=spec["width"], kernel_size=spec["kernel_size"],
        init_std=spec["init_std"], trainable_readout=spec["trainable_readout"],
    )
    state = checkpoint["model_state_dict"]
    if any(v.dtype == torch.float64 for v in state.values()):
        model = model.double()
    model.load_state_dict(state)
    return model


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "SUPPORTED_VERSIONS",
    "ModelConfig",
    "check_training_checkpoint",
    "checkpoint_dict",
    "is_training_checkpoint",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "model_spec",
    "stack_snapshots",
]

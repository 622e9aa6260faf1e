"""PyTorch pickles (`torch.save`): state dicts, nested training checkpoints, our own format, and
(only with `unsafe_load`) whole pickled modules.

Safe by default, for zip and legacy (non-zip) files alike: `_torch_load.torch_load` runs
`torch.load(weights_only=True)`, which rebuilds only tensors, containers and primitives plus the
inert metadata training scripts save beside the weights (`_metadata`: argparse.Namespace, pathlib
paths, numpy scalars and arrays, datetimes, defaultdicts, each rebuilt by a checking stand-in);
any other Python global in the pickle (a model class, `os.system`, ...) makes it stop *before*
calling anything, and that becomes a one-line `LinearCNNInputError` naming the class. The metadata
is then ignored: only the tensors are inventoried.

Zip-format files are first read without torch (`_safe_unpickle.read_torch_save`), which rebuilds
only tensors, parameters and containers, a subset of the above; a file that needs anything more
is handed to torch. Both give the same inventory; a `fit` on a plain state dict or on our own
checkpoint then never imports torch (about a second of its start-up).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linearcnn.checkpoints._inventory import (
    ConvCandidate,
    Inventory,
    as_float64,
    canonical_name,
    single_array_inventory,
    tensor_candidates,
)
from linearcnn.checkpoints._safe_unpickle import StoredTensor, float64_reader, read_torch_save
from linearcnn.checkpoints.training import check_training_checkpoint, is_training_checkpoint
from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

#: Keys under which training scripts nest the model's weights, in order of preference. The live
#: model comes before its EMA copy. Descended into only when the value is itself a mapping holding
#: tensors (or a module), so neither a flat state dict (whose values are tensors) nor a model
#: description (`"model": {"arch": ...}`) is mistaken for the weights.
CONTAINER_KEYS: tuple[str, ...] = (
    "model_state_dict",
    "state_dict",
    "model",
    "net",
    "network",
    "module",
    "params",
    "model_ema",
    "ema",
    "ema_state_dict",
    "state_dict_ema",
)

#: Top-level entries that never hold the model's weights (skipped when flattening a mapping).
_NOT_WEIGHTS: frozenset[str] = frozenset(
    {
        "optimizer",
        "optimizer_state_dict",
        "optim",
        "scheduler",
        "lr_scheduler",
        "scaler",
        "rng_state",
    }
)

_MAX_DEPTH = 6


def _is_tensor(obj: Any) -> bool:
    """A torch tensor or a tensor of an archive read without torch (`StoredTensor`); numpy arrays
    in a checkpoint's metadata are not weights. Without torch imported nothing is a torch tensor."""
    torch = sys.modules.get("torch")
    return isinstance(obj, StoredTensor) or (torch is not None and isinstance(obj, torch.Tensor))


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def unwrap(obj: Any) -> Any:
    """Descend through wrapper keys (`CONTAINER_KEYS`) to the object holding the weights."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(obj, Mapping):
            return obj
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if _is_module(inner) or (
                isinstance(inner, Mapping) and flatten_tensors(inner, depth=1)
            ):
                obj = inner
                break
        else:
            return obj
    return obj


def flatten_tensors(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """(dotted key, tensor) pairs of a nested mapping/list, in stored order (`_is_tensor`)."""
    items: list[tuple[str, Any]] = []
    if depth > _MAX_DEPTH:
        return items
    if _is_tensor(obj):
        return [(prefix, obj)]
    if isinstance(obj, Mapping):
        entries = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        entries = [(str(i), v) for i, v in enumerate(obj)]
    else:
        return items
    for key, value in entries:
        if depth == 0 and key in _NOT_WEIGHTS:
            continue
        items.extend(flatten_tensors(value, f"{prefix}.{key}" if prefix else key, depth + 1))
    return items


def _fetcher(tensor: Any, path: Path | str = "") -> Callable[[], np.ndarray]:
    """A zero-argument reader of `tensor` (a torch tensor, or a `StoredTensor` of the file at
    `path`) as float64."""
    if isinstance(tensor, StoredTensor):
        return float64_reader(Path(path), tensor, "torch.save file")
    return lambda: as_float64(tensor)


def state_dict_inventory(path: Path, mapping: Any, *, fmt: str) -> Inventory:
    """Inventory of a (possibly nested) mapping of tensors, in stored (state-dict) order."""
    entries = [
        (key, tuple(t.shape), bool(t.is_floating_point()), _fetcher(t, path))
        for key, t in flatten_tensors(mapping)
        if not t.is_nested  # a nested tensor has no one shape (and cannot be a convolution's weight)
    ]
    candidates, others = tensor_candidates(entries)
    return Inventory(
        path=str(path),
        format=fmt,
        candidates=candidates,
        order="state-dict order",
        other_tensors=others,
    )


def module_inventory(path: Path | str, model: nn.Module, *, fmt: str = "torch-module") -> Inventory:
    """Inventory of a whole module (unpickled from `path`, or in memory): 4-D weights of
    non-transposed conv-like modules, in `named_modules()` order."""
    import torch
    from torch import nn

    candidates: list[ConvCandidate] = []
    seen: set[str] = set()
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.modules.conv._ConvTransposeNd) or not isinstance(
            weight, torch.Tensor
        ):
            continue
        name = canonical_name(module_name) or "weight"
        if weight.dim() != 4 or not weight.is_floating_point() or name in seen:
            continue
        seen.add(name)
        key = f"{module_name}.weight" if module_name else "weight"
        candidates.append(
            ConvCandidate(name=name, key=key, shape=tuple(weight.shape), fetch=_fetcher(weight))
        )
    chosen = {c.key for c in candidates}
    others = [(k, tuple(t.shape)) for k, t in model.state_dict().items() if k not in chosen]
    return Inventory(
        path=str(path),
        format=fmt,
        candidates=candidates,
        order="named_modules() order",
        other_tensors=others,
    )


def _linearcnn_inventory(path: Path, checkpoint: Mapping[str, Any]) -> Inventory:
    """Inventory of our own training checkpoint (format "linearcnn-checkpoint", checked by its one home)."""
    checked = check_training_checkpoint(checkpoint, path)
    state, first = checked["model_state_dict"], checked["first_layer"]
    inv = state_dict_inventory(path, state, fmt="linearcnn")
    inv.recorded_first = canonical_name(first["name"])
    initial = first.get("initial_weight")
    if _is_tensor(initial):
        inv.init_weights[inv.recorded_first] = _fetcher(initial, path)
    return inv


def torch_pickle_inventory(path: Path, *, unsafe_load: bool, zip_format: bool) -> Inventory:
    """Inventory of a `torch.save` file (zip or legacy format): read without torch when the file
    holds only tensors and containers (`read_torch_save`), otherwise with `torch_load`."""
    obj = read_torch_save(path) if zip_format and not unsafe_load else None
    if obj is None:
        from linearcnn.checkpoints._torch_load import torch_load

        obj = torch_load(path, unsafe_load=unsafe_load, zip_format=zip_format)
    if is_training_checkpoint(obj):
        return _linearcnn_inventory(path, obj)
    obj = unwrap(obj)
    if _is_module(obj):
        return module_inventory(path, obj)
    if _is_tensor(obj):
        return single_array_inventory(
            path,
            shape=tuple(obj.shape),
            dtype=str(obj.dtype),
            floating=bool(obj.is_floating_point()),
            fmt="torch-state-dict",
            fetch=_fetcher(obj, path),
        )
    if isinstance(obj, (Mapping, list, tuple)):
        return state_dict_inventory(path, obj, fmt="torch-state-dict")
    raise LinearCNNInputError(
        f"checkpoint {str(path)!r} holds a {type(obj).__name__}; expected a state dict (a mapping of "
        "tensors), a training checkpoint containing one, or a tensor"
    )

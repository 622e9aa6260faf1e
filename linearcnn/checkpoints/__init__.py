"""Reading checkpoints safely and finding their first convolution layer.

Public API::

    load_first_layer(path, *, layer=None, unsafe_load=False) -> FirstLayer
    list_conv_layers(path, *, unsafe_load=False) -> list[(name, shape)]
    load_init_weight(path, layer=None, *, expected_shape=None, unsafe_load=False) -> ndarray
    with_init_from(first, path, *, layer=None, unsafe_load=False) -> FirstLayer
    detect_format(path) -> str
    canonical_name(key) -> str           # the one place wrapper prefixes are stripped
    load_training_checkpoint(path) -> dict   # our own training format (`training`: its one home)
    model_from_checkpoint(checkpoint) -> nn.Module

**Formats** are recognised from content, not the suffix (see `_detect`): PyTorch `torch.save`
files (zip or legacy pickle) holding a state dict, a nested training checkpoint, our own
linearcnn checkpoint, or a tensor; TorchScript archives; safetensors; ONNX; `.npy`; `.npz`.

**Safety.** Nothing is executed by default. PyTorch pickles are read with
`torch.load(weights_only=True)`, which rebuilds only tensors, containers and primitives, plus the
inert metadata real training checkpoints carry (argparse.Namespace, pathlib paths, numpy scalars
and arrays, datetimes, defaultdicts), rebuilt by checking stand-ins (`_metadata.py`), and stops
*before* calling any other Python object, so a pickle whose `__reduce__` would run code is refused
and nothing runs. A whole pickled `nn.Module` (`torch.save(model)`) is refused the same way,
with a hint to pass `unsafe_load=True` (the CLI's `--unsafe-load`; plain `torch.load(weights_only=False)`;
only for trusted files). TorchScript archives are read as data: an allow-list unpickler
(`_safe_unpickle.py`) rebuilds tensors, size-checked against their zip entries, and inert
stand-ins for scripted objects, and the archive's code is parsed as text (`_script_code.py`) for
the order of the convolutions; nothing from the file runs. `torch.jit.load`, which runs the
archive's `__setstate__`, is used only with `unsafe_load=True` (`_torchscript_jit.py`).
NumPy uses `allow_pickle=False`; safetensors and ONNX hold no code.

**Nested checkpoints.** A mapping that has one of `CONTAINER_KEYS` (`model_state_dict`,
`state_dict`, `model`, `net`, `network`, `module`, `params`, `model_ema`, `ema`, ...) whose value
is itself a mapping (or module) is descended into, the first such key in that order winning (the
live model before its EMA copy), repeatedly. What remains is flattened to dotted keys, skipping
optimizer/scheduler entries. Keys are made canonical by `canonical_name` (`module.`, `_orig_mod.`).

**First-layer rule.** In order:

1. `layer=NAME` when given: matched with or without `.weight` and wrapper prefixes, then as a
   unique dotted suffix (`conv1` finds `model.conv1`); close matches are named when it is absent.
2. The layer the file names itself (linearcnn checkpoints: `first_layer.name`, whose
   `initial_weight` is returned as `init_weight`).
3. Files with a graph (TorchScript, ONNX): the first convolution in execution order whose input is
   derived from the graph input. This is the true first layer, whatever the names.
4. Otherwise (state dicts, safetensors, modules loaded with `unsafe_load`): among floating-point
   4-D weights (keys ending in `weight`; any 4-D tensor if no key does), in stored order (state
   dicts keep module registration order; safetensors sorts names), the first with 3 input
   channels (RGB), else the first with 1 or 4 (grey, RGBA), else the first. Preferring image-like
   input channels skips heads registered before the stem and depthwise convolutions (1 input
   channel) that sort before a 3-channel stem. `.npz`: simply the first 4-D array.

A vision transformer's patch embedding (`patch_embed.proj.weight`, `conv_proj.weight`,
(D, C, p, p) applied with stride p) is a convolution and counts as a first layer. Weights come
back as float64 (K, C, kh, kw); NaN/Inf or all-zero weights are refused.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from linearcnn.checkpoints._detect import check_checkpoint_path, sniff_format
from linearcnn.checkpoints._inventory import (
    Inventory,
    canonical_name,
    check_weights,
    fetch_weights,
    format_shape,
    layer_name,
    select_layer,
)
from linearcnn.checkpoints._torch_pickle import CONTAINER_KEYS
from linearcnn.checkpoints.training import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    load_training_checkpoint,
    model_from_checkpoint,
)
from linearcnn.errors import LinearCNNInputError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CONTAINER_KEYS",
    "FirstLayer",
    "canonical_name",
    "detect_format",
    "layer_name",
    "list_conv_layers",
    "load_first_layer",
    "load_init_weight",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "with_init_from",
]

PathLike = str | os.PathLike[str]


@dataclass
class FirstLayer:
    """The first convolution layer of a checkpoint."""

    name: str  # module name, e.g. "features.0" (no ".weight")
    weight: np.ndarray  # (K, C, kh, kw) float64
    init_weight: np.ndarray | None  # (K, C, kh, kw) float64 initial weights, when known
    path: str
    # "torch-state-dict", "linearcnn", "torchscript", "safetensors", "onnx", "npy", "npz",
    # or "torch-module" (a whole module, read with unsafe_load)
    format: str
    selected_by: str = ""  # how the layer was chosen, in words (for reports)


def _read_inventory(path: PathLike, *, unsafe_load: bool) -> Inventory:
    """Everything the first-layer rules need from the file at `path`."""
    target = check_checkpoint_path(path)
    kind = sniff_format(target)
    if kind in ("torch-zip", "torch-legacy"):
        from linearcnn.checkpoints._torch_pickle import torch_pickle_inventory

        return torch_pickle_inventory(
            target, unsafe_load=unsafe_load, zip_format=kind == "torch-zip"
        )
    if kind == "torchscript":
        from linearcnn.checkpoints._torchscript import torchscript_inventory

        return torchscript_inventory(target, unsafe_load=unsafe_load)
    if kind == "onnx":
        from linearcnn.checkpoints._onnx import onnx_inventory

        return onnx_inventory(target)
    from linearcnn.checkpoints import _arrays

    readers = {
        "npy": _arrays.npy_inventory,
        "npz": _arrays.npz_inventory,
        "safetensors": _arrays.safetensors_inventory,
    }
    return readers[kind](target)


def detect_format(path: PathLike) -> str:
    """The container kind of `path` from its content: "torch-zip", "torch-legacy", "torchscript",
    "safetensors", "onnx", "npy" or "npz" (see `linearcnn.checkpoints._detect`)."""
    return sniff_format(check_checkpoint_path(path))


def _shape_checked(weights: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if weights.shape != shape:
        raise LinearCNNInputError(
            f"{what} has shape {format_shape(weights.shape)}; expected {format_shape(shape)}"
        )
    return weights


def load_first_layer(
    path: PathLike, *, layer: str | None = None, unsafe_load: bool = False
) -> FirstLayer:
    """Load the first convolution layer of the checkpoint at `path` (rules in the module docstring).

    Args:
        path: checkpoint file of any supported format.
        layer: name of the layer to use instead of the automatic choice (with or without
            `.weight` and `module.`/`_orig_mod.` prefixes).
        unsafe_load: allow full unpickling (`torch.load(weights_only=False)`), which can run code
            from the file; needed for whole pickled models. Only for trusted files.

    Returns:
        `FirstLayer` with float64 weights (K, C, kh, kw) and, when the file stores them
        (linearcnn checkpoints, `.npz` with `initial_weight`), the initial weights.

    Raises:
        LinearCNNInputError: missing/unreadable/unsafe file, no convolution, unknown `layer`,
            NaN/Inf or all-zero weights.
    """
    inv = _read_inventory(path, unsafe_load=unsafe_load)
    candidate, selected_by = select_layer(inv, layer)
    what = f"checkpoint {inv.path!r} layer {candidate.name!r}"
    weight = _shape_checked(fetch_weights(candidate.fetch, candidate.key, what), candidate.shape, what)  # (K, C, kh, kw)
    check_weights(weight, what)
    init_fetch = inv.init_fetch(candidate)
    init_weight = None
    if init_fetch is not None:
        init_what = f"checkpoint {inv.path!r} initial weights of layer {candidate.name!r}"
        init_weight = _shape_checked(fetch_weights(init_fetch, "initial_weight", init_what), candidate.shape, init_what)
        check_weights(init_weight, init_what, allow_zero=True)
    return FirstLayer(
        name=candidate.name,
        weight=weight,
        init_weight=init_weight,
        path=inv.path,
        format=inv.format,
        selected_by=selected_by,
    )


def list_conv_layers(
    path: PathLike, *, unsafe_load: bool = False
) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every convolution weight found, in the order the first-layer rule sees
    them: graph order for TorchScript/ONNX, stored order otherwise."""
    inv = _read_inventory(path, unsafe_load=unsafe_load)
    return [(c.name, c.shape) for c in inv.candidates]


def load_init_weight(
    path: PathLike,
    layer: str | None = None,
    *,
    expected_shape: tuple[int, ...] | None = None,
    unsafe_load: bool = False,
) -> np.ndarray:
    """Initial weights for a layer from a second checkpoint (the `init_checkpoint` workflow of `linearcnn.measurement`).

    The layer named `layer` is taken from the file's weights (for a linearcnn checkpoint: its
    model weights, i.e. a step-0 checkpoint gives the initialisation); `layer=None` applies the
    automatic rule; a file holding a single array (`.npy`, a saved tensor) is used whatever the
    name. Zero weights are allowed (zero initialisation); NaN/Inf are not.

    Raises:
        LinearCNNInputError: as `load_first_layer`, or when the shape differs from `expected_shape`
            (the message names both shapes).
    """
    inv = _read_inventory(path, unsafe_load=unsafe_load)
    if inv.single_array:
        candidate = inv.candidates[0]
    else:
        candidate, _ = select_layer(inv, layer)
    what = f"init_checkpoint {inv.path!r} layer {candidate.name!r}"
    if expected_shape is not None and tuple(candidate.shape) != tuple(expected_shape):
        raise LinearCNNInputError(
            f"{what} has shape {format_shape(candidate.shape)}, but the first layer has shape "
            f"{format_shape(expected_shape)}; expected the same shape",
            parameter="init_checkpoint",
        )
    try:
        weight = _shape_checked(fetch_weights(candidate.fetch, candidate.key, what), candidate.shape, what)  # (K, C, kh, kw)
        return check_weights(weight, what, allow_zero=True)
    except LinearCNNInputError as error:  # the message starts with `what`: name the parameter
        raise LinearCNNInputError(str(error), parameter="init_checkpoint") from None


def with_init_from(
    first: FirstLayer, path: PathLike, *, layer: str | None = None, unsafe_load: bool = False
) -> FirstLayer:
    """`first` with `init_weight` read from the checkpoint at `path`: the layer `layer`, or by
    default the layer of the same name; shapes must agree."""
    init = load_init_weight(
        path,
        layer if layer is not None else first.name,
        expected_shape=first.weight.shape,
        unsafe_load=unsafe_load,
    )
    return dataclasses.replace(first, init_weight=init)

"""Reading checkpoints safely and finding their first convolution layer.

Public API::

    load_first_layer(path, *, layer=None, unsafe_load=False, fold_bn=False) -> FirstLayer
    stem_error(first, data_channels) -> LinearCNNInputError | None   # a suspected stem, named
    list_conv_layers(path, *, unsafe_load=False) -> list[(name, shape)]
    load_init_weight(path, layer=None, *, expected_shape=None, unsafe_load=False) -> ndarray
    with_init_from(first, path, *, layer=None, unsafe_load=False) -> FirstLayer
    detect_format(path) -> str
    canonical_name(key) -> str           # the one place wrapper prefixes are stripped
    load_training_checkpoint(path) -> dict   # our own training format (`training`: its one home)
    model_from_checkpoint(checkpoint) -> nn.Module

**Formats** are recognised from content, not the suffix (see `_detect`): PyTorch `torch.save`
files (zip or legacy pickle) holding a state dict, a nested training checkpoint, our own
linearcnn checkpoint, or a tensor; TorchScript archives; safetensors; ONNX, float or quantized
(`QLinearConv`, `ConvInteger`, `DequantizeLinear` before a `Conv`: weights dequantized as
(q - zero_point) * scale, `_onnx_quant`); `.npy`; `.npz`; Hugging Face `save_pretrained` folders
(`model.safetensors`, a sharded `model.safetensors.index.json`, or `pytorch_model.bin`;
`_huggingface`); Keras `.keras`, `.weights.h5` and legacy `.h5` (kernels HWIO, returned as
(K, C, kh, kw); needs the optional h5py, `pip install 'linearcnn[keras]'`; `_keras`).

**BatchNorm.** `fold_bn=True` multiplies each filter by gamma / sqrt(running_var + eps) of the
BatchNorm that follows the layer (`_batchnorm`: by stored order or sibling name in state dicts,
a `BatchNormalization` node in ONNX, the next layer in a Keras config); `FirstLayer.bn_folded`
says whether the weights are as stored or folded. An ONNX first Conv that looks as if the export
folded a BatchNorm into it gets a note (`_onnx_graph.FOLDED_BN_NOTE`), a heuristic.

**Space-to-depth stems.** An ONNX first Conv fed by YOLOv5's Focus (Slice+Concat), SpaceToDepth
or pixel_unshuffle (Reshape+Transpose+Reshape) is refused with a line naming the stem: its input
channels are pixel blocks, so its patches are not image patches. Without a graph, a stem is only
suspected from the layer's name and 12 or 48 input channels (`FirstLayer.stem`, `stem_error`).

**Safety.** Nothing is executed by default. Zip-format PyTorch pickles are first read without
torch by an allow-list unpickler (`_safe_unpickle.read_torch_save`: tensors, parameters and
containers only, every storage checked against its zip entry, weights read when used); a file
that needs anything more goes to `torch.load(weights_only=True)`. PyTorch pickles are read with
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
NumPy uses `allow_pickle=False`; safetensors, ONNX and HDF5 hold no code; JSON configs
(Hugging Face `config.json`, Keras model configs) are parsed as data, never executed.

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
3b. Hugging Face folders whose `config.json` names a known `model_type`: that architecture's stem
   (`resnet.embedder.embedder.convolution`, `...patch_embeddings.projection`, ...).
4. Otherwise (state dicts, safetensors, modules loaded with `unsafe_load`): among floating-point
   4-D weights (keys ending in `weight`; any 4-D tensor if no key does), in stored order (state
   dicts keep module registration order; safetensors sorts names; Keras files follow the model
   config's layer list), the first with 3 input
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
from typing import TYPE_CHECKING

import numpy as np

from linearcnn.checkpoints._batchnorm import fold_batchnorm
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

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

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
    "stem_error",
    "suspected_stem",
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
    # "huggingface" (a save_pretrained folder), "keras" (.keras), "keras-h5" (.h5),
    # "torch-module" (a whole module, read with unsafe_load) or "module" (a module in memory)
    format: str
    selected_by: str = ""  # how the layer was chosen, in words (for reports)
    #: False: the weights as stored; True: multiplied per filter by the following BatchNorm's
    #: gamma / sqrt(running_var + eps) (`fold_bn=True` and a BatchNorm was found)
    bn_folded: bool = False
    batchnorm: str | None = None  # name of the BatchNorm found after the layer (fold_bn=True only)
    quantization: str | None = None  # how stored integer weights were dequantized (quantized ONNX)
    #: a space-to-depth stem (Focus, pixel_unshuffle) that seems to feed the layer, in words; set for
    #: files without a graph from the layer's name and channels (graph formats refuse such a layer)
    stem: str | None = None
    notes: tuple[str, ...] = ()  # what a report should say about the weights, one sentence each

    @property
    def weights_as(self) -> str:
        """"stored", "dequantized", "BatchNorm-folded" or "dequantized, BatchNorm-folded"."""
        parts = (["dequantized"] if self.quantization else []) + (["BatchNorm-folded"] if self.bn_folded else [])
        return ", ".join(parts) or "stored"


def _read_inventory(path: PathLike | nn.Module, *, unsafe_load: bool) -> Inventory:
    """Everything the first-layer rules need from the file at `path`, or from a module in memory."""
    if not isinstance(path, (str, os.PathLike)):
        import torch

        if not isinstance(path, torch.nn.Module):
            raise LinearCNNInputError(f"expected a checkpoint path or a torch.nn.Module, got a {type(path).__name__}")
        from linearcnn.checkpoints._torch_pickle import module_inventory

        return module_inventory(f"<{type(path).__name__} in memory>", path, fmt="module")
    target = check_checkpoint_path(path)
    kind = sniff_format(target)
    if kind == "huggingface":
        from linearcnn.checkpoints._huggingface import huggingface_inventory

        return huggingface_inventory(target)
    if kind in ("keras", "keras-h5"):
        from linearcnn.checkpoints._keras import keras_inventory

        return keras_inventory(target, zipped=kind == "keras")
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
    "safetensors", "onnx", "npy", "npz", "keras", "keras-h5" or "huggingface" (a folder) (see
    `linearcnn.checkpoints._detect`)."""
    return sniff_format(check_checkpoint_path(path))


def _shape_checked(weights: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if weights.shape != shape:
        raise LinearCNNInputError(
            f"{what} has shape {format_shape(weights.shape)}; expected {format_shape(shape)}"
        )
    return weights


def load_first_layer(
    path: PathLike | nn.Module, *, layer: str | None = None, unsafe_load: bool = False, fold_bn: bool = False
) -> FirstLayer:
    """Load the first convolution layer of the checkpoint at `path` (rules in the module docstring).

    Args:
        path: checkpoint file of any supported format, a Hugging Face model folder, or a
            `torch.nn.Module` in memory (measured without saving it; format "module").
        layer: name of the layer to use instead of the automatic choice (with or without
            `.weight` and `module.`/`_orig_mod.` prefixes).
        unsafe_load: allow full unpickling (`torch.load(weights_only=False)`), which can run code
            from the file; needed for whole pickled models. Only for trusted files.
        fold_bn: multiply each filter by gamma / sqrt(running_var + eps) of the BatchNorm that
            follows the layer (`FirstLayer.bn_folded` says whether one was found; when none is,
            the weights are returned as stored with a note). `init_weight` is never folded.

    Returns:
        `FirstLayer` with float64 weights (K, C, kh, kw) and, when the file stores them
        (linearcnn checkpoints, `.npz` with `initial_weight`), the initial weights.

    Raises:
        LinearCNNInputError: missing/unreadable/unsafe file, no convolution, unknown `layer`,
            NaN/Inf or all-zero weights, a graph whose first convolution follows a
            space-to-depth stem (its patches are not image patches).
    """
    inv = _read_inventory(path, unsafe_load=unsafe_load)
    candidate, selected_by = select_layer(inv, layer)
    what = f"checkpoint {inv.path!r} layer {candidate.name!r}"
    if candidate.stem is not None and inv.graph_ordered:
        raise LinearCNNInputError(f"{what}: {candidate.stem}")
    weight = _shape_checked(fetch_weights(candidate.fetch, candidate.key, what), candidate.shape, what)  # (K, C, kh, kw)
    check_weights(weight, what)
    notes = list(candidate.notes)
    if candidate.quantization:
        notes.append(f"weights: {candidate.quantization}")
    bn_name = None
    if fold_bn:
        bn = candidate.batchnorm() if candidate.batchnorm is not None else None
        if bn is None:
            notes.append("fold_bn: no BatchNorm found after this layer; the weights are as stored")
        else:
            weight = check_weights(fold_batchnorm(weight, bn, what), what)
            bn_name = bn.name
            notes.append(f"fold_bn: multiplied by gamma / sqrt(running_var + eps) of BatchNorm {bn.name!r} "
                         f"(eps {bn.eps:g}, {bn.eps_source})")
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
        bn_folded=bn_name is not None,
        batchnorm=bn_name,
        quantization=candidate.quantization,
        stem=candidate.stem if candidate.stem is not None else suspected_stem(candidate.name, candidate.shape[1]),
        notes=tuple(notes),
    )


#: Name parts of a stem convolution that may sit behind a space-to-depth rearrangement.
_STEM_WORDS = ("focus", "stem", "space_to_depth", "spacetodepth", "unshuffle")


def suspected_stem(name: str, channels: int) -> str | None:
    """For a layer known only by name (no graph): the space-to-depth stem it seems to follow, in
    words, when it has 4*3 = 12 or 16*3 = 48 input channels and its name has one of `_STEM_WORDS`."""
    lowered = name.lower()
    blocks = {12: 2, 48: 4}.get(channels)
    if blocks is None or not any(word in lowered for word in _STEM_WORDS):
        return None
    kind = "Focus" if "focus" in lowered else "space-to-depth"
    return (
        f"layer {name!r} looks like it follows a space-to-depth stem ({kind}, guessed from its name), so its "
        f"{channels} input channels would be {blocks}x{blocks} pixel blocks of 3-channel images; patches of such "
        "a layer are not image patches"
    )


def stem_error(first: FirstLayer, data_channels: int) -> LinearCNNInputError | None:
    """The error to raise, instead of a bare channel mismatch, when `first` carries a `stem` and is
    measured on images of `data_channels` channels that are not its input channels."""
    if first.stem is None or first.weight.shape[1] == data_channels:
        return None
    return LinearCNNInputError(f"{first.stem} (the data have {data_channels} channel(s))", parameter="data")


def list_conv_layers(
    path: PathLike, *, unsafe_load: bool = False
) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every convolution weight found, in the order the first-layer rule sees
    them: graph order for TorchScript/ONNX, stored order otherwise."""
    inv = _read_inventory(path, unsafe_load=unsafe_load)
    return [(c.name, c.shape) for c in inv.candidates]


def load_init_weight(
    path: PathLike | nn.Module,
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

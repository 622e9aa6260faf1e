"""What a checkpoint holds, whatever its format, and the rules that pick its first layer.

Every reader (torch pickles, TorchScript, safetensors, ONNX, NumPy) turns a file into an
`Inventory`: the convolution weights it found (`ConvCandidate`, in graph order when the file has
a graph, otherwise in stored order), plus what the file itself says about its first layer. The
selection rules below are the only place where a first layer is chosen.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linearcnn.checkpoints._batchnorm import BatchNormRef, following_batchnorm
from linearcnn.errors import LinearCNNInputError

Shape = tuple[int, ...]

#: Input-channel counts of a network's first layer, in order of preference: RGB, then grey or RGBA.
_IMAGE_CHANNELS: tuple[tuple[int, ...], ...] = ((3,), (1, 4))


def canonical_name(key: str) -> str:
    """The one canonical form of a parameter or layer name: wrapper prefixes removed.

    `torch.nn.DataParallel` / `DistributedDataParallel` prefix every key with `module.` and
    `torch.compile` inserts `_orig_mod.` (at the top, or inside when a submodule was compiled).
    Leading `module.` components are removed (repeatedly, in any mix with `_orig_mod.`), and every
    `_orig_mod` component is removed wherever it occurs. A name that is only `module` is kept.

    >>> canonical_name("module._orig_mod.features.0.weight")
    'features.0.weight'
    >>> canonical_name("backbone._orig_mod.conv1")
    'backbone.conv1'
    """
    parts = [part for part in key.split(".") if part != "_orig_mod"]
    while len(parts) > 1 and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def layer_name(key: str) -> str:
    """Layer (module) name of a weight key: canonical, without a trailing `.weight`.

    >>> layer_name("module.stem.0.weight")
    'stem.0'
    """
    name = canonical_name(key)
    if name.endswith(".weight"):
        return name[: -len(".weight")]
    return name


def natural_key(name: str) -> list[Any]:
    """Sort key that orders `features.2` before `features.10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def format_shape(shape: Sequence[int]) -> str:
    """`(8, 3, 3, 3)` for a shape (a one-element shape keeps its comma)."""
    return str(tuple(int(n) for n in shape))


class TensorWithoutValues(LinearCNNInputError):
    """A stored tensor that cannot become an array of weights; the message is the predicate
    ("is on the meta device: it holds no values"), completed with the file and tensor by
    `fetch_weights`."""


def _without_values(tensor: Any) -> str | None:
    """Why the torch tensor `tensor` has no dense values to read, or None when it has them."""
    import torch

    if tensor.is_meta:
        return "is on the meta device: it holds no values; expected a tensor with stored weights"
    if tensor.is_nested:
        return "is a nested tensor; expected a dense tensor"
    if tensor.layout != torch.strided:
        return f"is sparse ({str(tensor.layout).replace('torch.', '')}); expected a dense tensor"
    if tensor.is_quantized:
        return "is quantized; expected a dense floating-point tensor"
    return None


def as_float64(tensor: Any) -> np.ndarray:
    """A torch tensor or array-like as a float64 NumPy array (a copy, on the CPU).

    Raises TensorWithoutValues for a torch tensor without dense values (meta, sparse, nested)."""
    if hasattr(tensor, "detach"):  # torch.Tensor; keeps this module free of a torch import
        import torch

        reason = _without_values(tensor)
        if reason is not None:
            raise TensorWithoutValues(reason)
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.array(tensor, dtype=np.float64)


@dataclass(frozen=True)
class ConvCandidate:
    """One convolution weight found in a file."""

    name: str  # layer name shown to people: canonical module name, no ".weight"
    key: str  # where the tensor sits in the file (original key, initializer or attribute path)
    shape: Shape  # (K, C, kh, kw)
    fetch: Callable[[], np.ndarray]  # reads the weights as float64 (K, C, kh, kw)
    aliases: tuple[str, ...] = ()  # further names `layer=` may use (ONNX node names, raw keys)
    #: finds the BatchNorm that follows this convolution (None: the format cannot tell)
    batchnorm: Callable[[], BatchNormRef | None] | None = None
    stem: str | None = None  # a pixel-rearranging stem feeds this convolution (graph formats: certain)
    quantization: str | None = None  # how `fetch` dequantizes stored integer weights
    notes: tuple[str, ...] = ()  # what a report should say about these weights

    def names(self) -> set[str]:
        """Every name by which `layer=` may pick this candidate, in canonical form."""
        return {layer_name(alias) for alias in (self.name, self.key, *self.aliases) if alias}


def fetch_weights(fetch: Callable[[], np.ndarray], key: str, what: str) -> np.ndarray:
    """`fetch()`, with a tensor that holds no dense values (`TensorWithoutValues`) reported as one
    line naming `what` (the file and layer) and the stored tensor `key`."""
    try:
        return fetch()
    except TensorWithoutValues as reason:
        raise LinearCNNInputError(f"{what}: tensor {key!r} {reason}") from None


@dataclass
class Inventory:
    """Format-independent view of a checkpoint, as the first-layer rules see it."""

    path: str
    format: str  # FirstLayer.format value
    candidates: list[ConvCandidate]  # graph order when `graph_ordered`, else stored order
    order: str  # how `candidates` are ordered, in words ("graph order", "state-dict order", ...)
    graph_ordered: bool = False
    graph_first: str | None = None  # name of the first convolution applied to the input
    recorded_first: str | None = None  # first layer named by the file itself (linearcnn format)
    preferred_first: tuple[str, str] | None = None  # (name, why): the stem its architecture names
    rule: str = "shape"  # "shape": prefer image-like input channels; "first": first in order
    init_weights: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    shared_init: Callable[[], np.ndarray] | None = (
        None  # init for whichever layer matches its shape
    )
    shared_init_shape: Shape | None = None
    other_tensors: list[tuple[str, Shape]] = field(default_factory=list)  # for error messages
    single_array: bool = False  # the file holds one bare array (npy, a saved tensor)

    def init_fetch(self, candidate: ConvCandidate) -> Callable[[], np.ndarray] | None:
        """How to read the stored initial weights of `candidate`, if the file has them."""
        names = candidate.names()
        for name, fetch in self.init_weights.items():
            if layer_name(name) in names:
                return fetch
        if self.shared_init is not None and self.shared_init_shape == candidate.shape:
            return self.shared_init
        return None


def graph_inventory(
    path: Any, fmt: str, candidates: list[ConvCandidate], first: str | None, stored: Sequence[tuple[str, Shape]]
) -> Inventory:
    """Inventory of a file with a graph (TorchScript, ONNX): convolutions in graph order, `first`
    the one applied to the input; `stored` (name, shape) of every stored tensor, for error messages."""
    used = {c.key for c in candidates}
    return Inventory(
        path=str(path),
        format=fmt,
        candidates=candidates,
        order="graph order",
        graph_ordered=True,
        graph_first=first,
        other_tensors=[(name, shape) for name, shape in stored if name not in used],
    )


def tensor_candidates(
    entries: Iterable[tuple[str, Shape, bool, Callable[[], np.ndarray]]],
    *,
    any_name: bool = False,
    stored_order: bool = True,
) -> tuple[list[ConvCandidate], list[tuple[str, Shape]]]:
    """Split (key, shape, is_floating, fetch) entries into convolution candidates and the rest.

    A candidate is a floating-point 4-D tensor whose key's last component ends in `weight`
    (`conv1.weight`, `stem.0.weight`); when no key looks like that (arrays named freely), every
    floating-point 4-D tensor is a candidate, as it always is with `any_name`. Names are canonical
    (`module.`/`_orig_mod.` stripped); a name seen twice keeps its first tensor. Each candidate
    can find the BatchNorm following it (`_batchnorm.following_batchnorm`; `stored_order` says
    whether `entries` are in module order, as state dicts are, or sorted by name).
    """
    listed = list(entries)
    four_d = [entry for entry in listed if len(entry[1]) == 4 and entry[2]]
    weight_like = [
        entry for entry in four_d if canonical_name(entry[0]).split(".")[-1].endswith("weight")
    ]
    chosen = four_d if any_name else (weight_like or four_d)
    chosen_keys = {entry[0] for entry in chosen}
    candidates: list[ConvCandidate] = []
    seen: set[str] = set()
    canonical = [(canonical_name(key), tuple(shape), fetch) for key, shape, _, fetch in listed]
    index_of = {key: i for i, (key, _, _, _) in reversed(list(enumerate(listed)))}

    def bn_finder(index: int, filters: int) -> Callable[[], BatchNormRef | None]:
        return lambda: following_batchnorm(canonical, index, filters, stored_order=stored_order)

    for key, shape, _, fetch in chosen:
        name = layer_name(key) or key
        if name in seen:
            continue
        seen.add(name)
        candidates.append(
            ConvCandidate(
                name=name, key=key, shape=tuple(shape), fetch=fetch, batchnorm=bn_finder(index_of[key], int(shape[0]))
            )
        )
    others = [(key, tuple(shape)) for key, shape, _, _ in listed if key not in chosen_keys]
    return candidates, others


def single_array_inventory(
    path: Any,
    *,
    shape: Shape,
    dtype: str,
    floating: bool,
    fmt: str,
    fetch: Callable[[], np.ndarray],
) -> Inventory:
    """Inventory of a file holding one bare array (npy, a saved tensor): it must be a
    floating-point 4-D weight; its layer is called `weight` (the file's stem also works)."""
    if len(shape) != 4 or not floating:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r} ({fmt}) holds one array of shape {format_shape(shape)} and dtype "
            f"{dtype}; expected a floating-point 4-D convolution weight (K, C, kh, kw)"
        )
    stem = getattr(path, "stem", "")
    candidate = ConvCandidate(
        name="weight", key="weight", shape=tuple(shape), fetch=fetch, aliases=(stem,)
    )
    return Inventory(
        path=str(path), format=fmt, candidates=[candidate], order="single array", single_array=True
    )


def _describe_contents(inv: Inventory, limit: int = 4) -> str:
    """Short description of the tensors a file held, for 'nothing found' messages."""
    seen = inv.other_tensors
    if not seen:
        return "it holds no tensors"
    four_d = [item for item in seen if len(item[1]) == 4]
    shown = (four_d + [item for item in seen if len(item[1]) != 4])[:limit]
    listing = ", ".join(f"{key} {format_shape(shape)}" for key, shape in shown)
    more = f", ... ({len(seen)} tensors, {len(four_d)} of them 4-D)" if len(seen) > limit else ""
    return f"saw {listing}{more}"


def no_convolution_error(inv: Inventory) -> LinearCNNInputError:
    """The error for a file in which no convolution weight was found."""
    return LinearCNNInputError(
        f"checkpoint {inv.path!r} ({inv.format}): no convolution weight found, expected a floating-point "
        f"4-D tensor (K, C, kh, kw); {_describe_contents(inv)}"
    )


def _by_shape_rule(candidates: Sequence[ConvCandidate]) -> ConvCandidate:
    """First candidate with 3 input channels, else with 1 or 4, else the first one."""
    for channels in _IMAGE_CHANNELS:
        for candidate in candidates:
            if candidate.shape[1] in channels:
                return candidate
    return candidates[0]


def _find_by_name(inv: Inventory, query: str) -> ConvCandidate | None:
    """Candidate named `query` (with or without `.weight` and wrapper prefixes), else a unique
    candidate whose name ends with `.query` (so `conv1` finds `model.conv1`), else None."""
    wanted = layer_name(query)
    for candidate in inv.candidates:
        if wanted in candidate.names():
            return candidate
    suffix_hits = [c for c in inv.candidates if any(n.endswith("." + wanted) for n in c.names())]
    if len(suffix_hits) == 1:
        return suffix_hits[0]
    return None


def _layer_not_found(inv: Inventory, query: str) -> LinearCNNInputError:
    wanted = layer_name(query)
    for key, shape in inv.other_tensors:
        if layer_name(key) == wanted or canonical_name(key) == canonical_name(query):
            return LinearCNNInputError(
                f"layer {query!r} in {inv.path!r}: tensor {key!r} has shape {format_shape(shape)}, "
                "expected a floating-point 4-D convolution weight (K, C, kh, kw)",
                parameter="layer",
            )
    names = [c.name for c in inv.candidates]
    suffix_hits = [
        c.name for c in inv.candidates if any(n.endswith("." + wanted) for n in c.names())
    ]
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
    if len(suffix_hits) > 1:
        hint = "it is ambiguous, name one of: " + ", ".join(suffix_hits[:6])
    elif close:
        hint = "close matches: " + ", ".join(close)
    elif names:
        hint = "convolution layers: " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    else:
        hint = _describe_contents(inv)
    return LinearCNNInputError(f"layer {query!r} not found in {inv.path!r} ({inv.format}); {hint}", parameter="layer")


def select_layer(inv: Inventory, layer: str | None) -> tuple[ConvCandidate, str]:
    """Choose the first layer of `inv`; returns it and how it was chosen, in words.

    In order: `layer` when given (see `_find_by_name`); the layer the file names itself
    (linearcnn checkpoints); the first convolution applied to the input (files with a graph); the
    stem convolution the architecture names (Hugging Face folders with a known `model_type`);
    otherwise, in stored order, the first 4-D weight with 3 input channels, else with 1 or 4,
    else the first 4-D weight (`rule == "first"`: simply the first, for `.npz` files).
    """
    if layer is not None:
        found = _find_by_name(inv, layer)
        if found is None:
            raise _layer_not_found(inv, layer)
        return found, "named by layer"
    if not inv.candidates:
        raise no_convolution_error(inv)
    if inv.recorded_first is not None:
        found = _find_by_name(inv, inv.recorded_first)
        if found is None:
            raise LinearCNNInputError(
                f"checkpoint {inv.path!r}: its first_layer.name {inv.recorded_first!r} is not a 4-D weight "
                f"in model_state_dict; expected one of: {', '.join(c.name for c in inv.candidates[:6])}"
            )
        return found, "recorded in the checkpoint"
    if inv.graph_first is not None:
        found = next(c for c in inv.candidates if c.name == inv.graph_first)
        return found, "first convolution applied to the input (graph order)"
    if inv.preferred_first is not None:
        found = _find_by_name(inv, inv.preferred_first[0])
        if found is not None:
            return found, inv.preferred_first[1]
    if inv.rule == "first":
        return inv.candidates[0], f"first 4-D array ({inv.order})"
    return _by_shape_rule(inv.candidates), f"shape rule ({inv.order})"


def check_weights(weights: np.ndarray, what: str, *, allow_zero: bool = False) -> np.ndarray:
    """Reject NaN/Inf weights (and all-zero ones unless `allow_zero`); returns `weights`."""
    bad = int(np.count_nonzero(~np.isfinite(weights)))
    if bad:
        raise LinearCNNInputError(
            f"{what}: {bad} of {weights.size} weights are NaN or infinite; expected finite numbers"
        )
    if weights.size == 0:
        raise LinearCNNInputError(f"{what}: has no weights (shape {weights.shape}); expected at least one filter")
    if not allow_zero and not np.any(weights):
        raise LinearCNNInputError(
            f"{what}: all {weights.size} weights are zero; expected a trained or initialised layer"
        )
    return weights

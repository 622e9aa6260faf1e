"""TorchScript archives loaded with `torch.jit.load`: only with `unsafe_load`, for trusted files.

`torch.jit.load` compiles the archive's code and runs parts of it while loading (a class's
`__setstate__`), so it is never used by default (`_torchscript` reads archives as data). With
`unsafe_load`, the module is loaded and its inlined forward graph gives the order: the first
convolution node whose input is derived from the graph's input is the first layer. Its weight is
traced back to the attribute path that stores it (`stem.weight`), or to a constant for frozen
modules.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch

from linearcnn.checkpoints._inventory import (
    ConvCandidate,
    Inventory,
    as_float64,
    canonical_name,
    graph_inventory,
    layer_name,
)
from linearcnn.checkpoints._torch_pickle import state_dict_inventory
from linearcnn.errors import LinearCNNInputError

#: Graph operators that apply a 2-D convolution; for the generic ones the `transposed` flag is
#: argument 6 (transposed convolutions are not first layers of a classifier).
_CONV_KINDS = {
    "aten::conv2d",
    "aten::_convolution",
    "aten::convolution",
    "aten::_convolution_mode",
    "aten::mkldnn_convolution",
    "aten::cudnn_convolution",
}
_GENERIC_CONV_KINDS = {"aten::_convolution", "aten::convolution"}
_MAX_TRACE_BACK = 32


def _constant(value: Any) -> Any:
    node = value.node()
    if node.kind() != "prim::Constant":
        return None
    try:
        return value.toIValue()
    except RuntimeError:
        return None


def _attr_path(value: Any, self_value: Any) -> list[str] | None:
    """Attribute names leading from the module (`self`) to `value`, or None."""
    path: list[str] = []
    while value.node().kind() == "prim::GetAttr":
        node = value.node()
        path.insert(0, node.s("name"))
        value = node.input()
    return path if path and value.unique() == self_value.unique() else None


def _getattr_path(module: Any, path: list[str]) -> Any:
    obj = module
    for part in path:
        obj = getattr(obj, part)
    return obj


def _resolve_weight(value: Any, module: Any, self_value: Any) -> tuple[str, torch.Tensor] | None:
    """(attribute path or constant name, tensor) of the stored 4-D tensor a weight comes from.

    Follows the value back through the graph (breadth first, a bounded number of steps) so that
    a weight transformed before use (weight standardisation, a cast) still finds its parameter.
    """
    frontier = [value]
    for _ in range(_MAX_TRACE_BACK):
        if not frontier:
            return None
        current = frontier.pop(0)
        path = _attr_path(current, self_value)
        if path is not None:
            tensor = _getattr_path(module, path)
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
                return ".".join(path), tensor
            continue
        constant = _constant(current)
        if isinstance(constant, torch.Tensor):
            if constant.dim() == 4:
                name = current.debugName()
                return (name[len("self.") :] if name.startswith("self.") else name), constant
            continue
        frontier.extend(current.node().inputs())
    return None


def _is_transposed(node: Any) -> bool:
    if node.kind() not in _GENERIC_CONV_KINDS:
        return False
    inputs = list(node.inputs())
    return len(inputs) > 6 and bool(_constant(inputs[6]))


def _walk(block: Any, derived: set[int], found: list[tuple[Any, bool]]) -> bool:
    """Visit `block`'s nodes in execution order, recording convolution nodes and whether their
    input is derived from the graph input; returns whether the block's outputs are derived."""
    for node in block.nodes():
        node_derived = any(v.unique() in derived for v in node.inputs())
        for inner in node.blocks():
            if node_derived:
                derived.update(v.unique() for v in inner.inputs())
            if _walk(inner, derived, found):
                node_derived = True
        if node_derived:
            derived.update(v.unique() for v in node.outputs())
        if node.kind() in _CONV_KINDS and not _is_transposed(node):
            first_input = next(iter(node.inputs()))
            found.append((node, first_input.unique() in derived))
    return any(v.unique() in derived for v in block.outputs())


def _graph_convolutions(module: Any) -> tuple[list[ConvCandidate], str | None]:
    """Convolutions of the inlined forward graph in execution order, and the name of the first
    one applied to the input (None when none is)."""
    graph = module.inlined_graph
    graph_inputs = list(graph.inputs())
    self_value, data_inputs = graph_inputs[0], graph_inputs[1:]
    derived = {v.unique() for v in data_inputs}
    found: list[tuple[Any, bool]] = []
    _walk(graph.block(), derived, found)
    candidates: list[ConvCandidate] = []
    first: str | None = None
    seen: set[str] = set()
    for node, from_input in found:
        weight_value = list(node.inputs())[1]
        resolved = _resolve_weight(weight_value, module, self_value)
        if resolved is None:
            continue
        key, tensor = resolved
        if key.isdigit():  # an anonymous constant (frozen module): name it by its position
            key = f"conv{len(seen)}"
        name = layer_name(key) or key
        if first is None and from_input:
            first = name
        if name in seen:
            continue
        seen.add(name)
        candidates.append(
            ConvCandidate(
                name=name,
                key=key,
                shape=tuple(tensor.shape),
                fetch=functools.partial(as_float64, tensor),
                aliases=(canonical_name(key),),
            )
        )
    return candidates, first


def jit_inventory(path: Path) -> Inventory:
    """Inventory of a trusted TorchScript archive loaded with `torch.jit.load` (runs code from the
    file): graph order when the forward graph can be read, otherwise parameter order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
    except MemoryError:
        raise
    except Exception as exc:  # any failure to parse a user's file is bad input
        line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: cannot load TorchScript archive, truncated or corrupt? {line}"
        ) from None
    try:
        candidates, first = _graph_convolutions(module)
    except (AttributeError, RuntimeError, IndexError, StopIteration):
        candidates, first = [], None  # no readable forward graph: fall back to parameter order
    state = module.state_dict()
    if not candidates:
        inv = state_dict_inventory(path, state, fmt="torchscript")
        inv.order = "parameter order (no convolution found in the forward graph)"
        return inv
    return graph_inventory(
        path, "torchscript", candidates, first, [(k, tuple(t.shape)) for k, t in state.items()]
    )


__all__ = ["jit_inventory"]

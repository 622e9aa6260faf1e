"""ONNX models: weights from initializers or `Constant` nodes, order from the graph.

ONNX requires `graph.node` to be topologically sorted, so the first `Conv` node (in node order)
whose data input is derived from a graph input (not from initializers alone) is the first layer.
Its weight is followed back through `Identity`/`Cast` nodes to an initializer or a `Constant`
node. Reading ONNX runs nothing: it is a protobuf message.

A tensor's data are checked against its declared shape before NumPy sees them: negative
dimensions, or a `raw_data` / `float_data` / `double_data` / `int32_data` field that holds more or
fewer values than the dimensions multiply to, are one-line errors naming the file and the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn.checkpoints._inventory import ConvCandidate, Inventory, graph_inventory, tensor_candidates
from linearcnn.errors import LinearCNNInputError

_PASS_THROUGH = {"Identity", "Cast"}
_ONNX_DOMAINS = {"", "ai.onnx"}


def _where(path: Path, name: str) -> str:
    return f"checkpoint {str(path)!r}: ONNX tensor {name!r}"


def _dims(path: Path, name: str, tensor: Any) -> tuple[int, ...]:
    """The declared shape of `tensor`; negative dimensions are refused."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise LinearCNNInputError(f"{_where(path, name)} declares shape {dims}; expected dimensions >= 0")
    return dims


#: Where a floating-point TensorProto keeps its values when not in `raw_data`: (field, values per element).
_TYPED_FIELDS = {1: "float_data", 11: "double_data", 10: "int32_data", 16: "int32_data"}  # FLOAT, DOUBLE, FLOAT16, BFLOAT16


def _check_data_size(path: Path, name: str, tensor: Any, dims: tuple[int, ...]) -> None:
    """Refuse a tensor whose stored values do not number exactly what its dimensions declare
    (checked before any array is built: a few bytes declaring 1e12 elements allocate nothing)."""
    from onnx import helper

    count = math.prod(dims)
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    if tensor.raw_data:
        held, expected, unit = len(tensor.raw_data), count * itemsize, "bytes in raw_data"
    else:
        field = _TYPED_FIELDS.get(tensor.data_type)
        if field is None:  # not a floating-point type: never fetched as weights
            return
        held, expected, unit = len(getattr(tensor, field)), count, f"values in {field}"
    if held != expected:
        raise LinearCNNInputError(
            f"{_where(path, name)} declares shape {dims} ({count:,} elements of "
            f"{helper.tensor_dtype_to_np_dtype(tensor.data_type)}) but holds {held:,} {unit}; expected {expected:,}"
        )


def _tensor_fetch(path: Path, name: str, tensor: Any) -> Callable[[], np.ndarray]:
    """A zero-argument reader of `tensor` as float64, its data checked against its shape first."""

    def fetch() -> np.ndarray:
        from onnx import numpy_helper

        dims = _dims(path, name, tensor)
        _check_data_size(path, name, tensor, dims)
        try:
            values = numpy_helper.to_array(tensor)
        except Exception as exc:  # any failure to decode a user's tensor is bad input
            raise LinearCNNInputError(
                f"{_where(path, name)}: cannot decode its data ({type(exc).__name__}: {str(exc)[:160]}); "
                "expected values matching its shape and type"
            ) from None
        return np.asarray(values, dtype=np.float64)

    return fetch


def _is_float(tensor: Any) -> bool:
    from onnx import TensorProto

    return tensor.data_type in {
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
    }


def _constant_tensor(node: Any) -> Any | None:
    """The TensorProto a `Constant` node holds in its `value` attribute, or None."""
    from onnx import AttributeProto

    for attribute in node.attribute:
        if attribute.name == "value" and attribute.type == AttributeProto.TENSOR:
            return attribute.t
    return None


def _weight_source(
    name: str, initializers: dict[str, Any], producers: dict[str, Any]
) -> tuple[str, Any] | None:
    """(source name, TensorProto) of the stored tensor behind the value `name`, or None."""
    for _ in range(16):
        if name in initializers:
            return name, initializers[name]
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            tensor = _constant_tensor(node)
            return (name, tensor) if tensor is not None else None
        if node.op_type in _PASS_THROUGH and node.input:
            name = node.input[0]
            continue
        return None
    return None


def _check_names(path: Path, graph: Any) -> None:
    """Refuse a graph with a name that is not valid UTF-8 (protobuf then hands over bytes, not str)."""
    named = [(t.name, "initializer") for t in graph.initializer] + [(v.name, "graph input") for v in graph.input]
    for node in graph.node:
        named += [(node.name, "node"), (node.op_type, "node op_type"), (node.domain, "node domain")]
        named += [(name, f"input of node {node.name!r}") for name in node.input]
        named += [(name, f"output of node {node.name!r}") for name in node.output]
    for name, what in named:
        if isinstance(name, bytes):
            raise LinearCNNInputError(
                f"checkpoint {str(path)!r}: ONNX {what} name {name!r} is not valid UTF-8; expected text names "
                "(truncated or corrupt?)"
            )


def _load_model(path: Path) -> Any:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: cannot parse as ONNX, truncated or corrupt? {type(exc).__name__}: "
            f"{str(exc)[:160]}"
        ) from None
    graph = model.graph
    if model.ir_version <= 0 or (not graph.node and not graph.initializer):
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: not a usable ONNX model (ir_version {model.ir_version}, "
            f"{len(graph.node)} nodes, {len(graph.initializer)} initializers); expected a model with a graph"
        )
    _check_names(path, graph)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # any failure to parse a user's file is bad input
            raise LinearCNNInputError(
                f"checkpoint {str(path)!r}: cannot read its external tensor data beside the model: {exc}"
            ) from None
    return model


def onnx_inventory(path: Path) -> Inventory:
    """Inventory of an ONNX model: `Conv` nodes in graph order, else its 4-D tensors."""
    model = _load_model(path)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    derived = {value.name for value in graph.input} - set(initializers)
    found: dict[str, tuple[str, Any, list[str]]] = {}  # name -> (source name, tensor, aliases)
    first: str | None = None
    for node in graph.node:
        from_input = bool(node.input) and node.input[0] in derived
        if any(name in derived for name in node.input if name):
            derived.update(node.output)
        if node.op_type != "Conv" or node.domain not in _ONNX_DOMAINS or len(node.input) < 2:
            continue
        source = _weight_source(node.input[1], initializers, producers)
        if source is None or len(source[1].dims) != 4 or not _is_float(source[1]):
            continue
        source_name, tensor = source
        name = (
            source_name[: -len(".weight")]
            if source_name.endswith(".weight")
            else (node.name or source_name)
        )
        if first is None and from_input:
            first = name
        # A weight used by several Conv nodes is one layer; every node's name selects it.
        entry = found.setdefault(name, (source_name, tensor, []))
        entry[2].extend(alias for alias in (node.name, node.input[1]) if alias)
    candidates = [
        ConvCandidate(
            name=name,
            key=source_name,
            shape=_dims(path, source_name, tensor),
            fetch=_tensor_fetch(path, source_name, tensor),
            aliases=tuple(aliases),
        )
        for name, (source_name, tensor, aliases) in found.items()
    ]
    constants = [
        (node.output[0], tensor)
        for node in graph.node
        if node.op_type == "Constant"
        and node.output
        and (tensor := _constant_tensor(node)) is not None
        and hasattr(tensor, "dims")
    ]
    stored = [(t.name, t) for t in graph.initializer] + constants
    if candidates:
        return graph_inventory(path, "onnx", candidates, first, [(name, tuple(int(d) for d in t.dims)) for name, t in stored])
    entries = [
        (name, _dims(path, name, t) if _is_float(t) and len(t.dims) == 4 else tuple(int(d) for d in t.dims), _is_float(t),
         _tensor_fetch(path, name, t))
        for name, t in stored
    ]
    fallback, others = tensor_candidates(entries)
    return Inventory(
        path=str(path),
        format="onnx",
        candidates=fallback,
        order="initializer order (no Conv node found)",
        other_tensors=others,
    )

"""ONNX models: weights from initializers or `Constant` nodes, order from the graph.

ONNX requires `graph.node` to be topologically sorted, so the first `Conv` node (in node order)
whose data input is derived from a graph input (not from initializers alone) is the first layer.
Its weight is followed back through `Identity`/`Cast` nodes to an initializer or a `Constant`
node. Reading ONNX runs nothing: it is a protobuf message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn.checkpoints._inventory import ConvCandidate, Inventory, graph_inventory, tensor_candidates
from linearcnn.errors import LinearCNNInputError

_PASS_THROUGH = {"Identity", "Cast"}
_ONNX_DOMAINS = {"", "ai.onnx"}


def _tensor_fetch(tensor: Any) -> Callable[[], np.ndarray]:
    from onnx import numpy_helper

    return lambda: np.asarray(numpy_helper.to_array(tensor), dtype=np.float64)


def _is_float(tensor: Any) -> bool:
    from onnx import TensorProto

    return tensor.data_type in {
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
    }


def _constant_tensor(node: Any) -> Any | None:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == "value":
            return helper.get_attribute_value(attribute)
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
            shape=tuple(int(d) for d in tensor.dims),
            fetch=_tensor_fetch(tensor),
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
        (name, tuple(int(d) for d in t.dims), _is_float(t), _tensor_fetch(t)) for name, t in stored
    ]
    fallback, others = tensor_candidates(entries)
    return Inventory(
        path=str(path),
        format="onnx",
        candidates=fallback,
        order="initializer order (no Conv node found)",
        other_tensors=others,
    )

"""ONNX models: weights from initializers or `Constant` nodes, order from the graph.

ONNX requires `graph.node` to be topologically sorted, so the first convolution node (`Conv`,
`QLinearConv`, `ConvInteger`, in node order) whose data input is derived from a graph input (not
from initializers alone) is the first layer. Its weight is followed back through `Identity`/`Cast`
nodes to an initializer or a `Constant` node, and quantized weights are dequantized
(`_onnx_quant`). Around the first layer, `_onnx_graph` looks for a space-to-depth stem feeding it,
a BatchNormalization after it, and signs that the export folded a BatchNorm into it. Reading ONNX
runs nothing: it is a protobuf message. Tensor data are checked against their declared shapes
before NumPy sees them (`_onnx_tensors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linearcnn.checkpoints._inventory import ConvCandidate, Inventory, graph_inventory, tensor_candidates
from linearcnn.checkpoints._onnx_graph import batchnorm_after, folded_bn_note, stem_before
from linearcnn.checkpoints._onnx_quant import WeightSource, conv_weight
from linearcnn.checkpoints._onnx_tensors import ONNX_DOMAINS, constant_tensor, is_float, tensor_dims, tensor_fetch
from linearcnn.errors import LinearCNNInputError


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


_CONV_OPS = {"Conv", "QLinearConv", "ConvInteger"}


def onnx_inventory(path: Path) -> Inventory:
    """Inventory of an ONNX model: convolution nodes (`Conv`, `QLinearConv`, `ConvInteger`) in
    graph order, else its 4-D tensors."""
    model = _load_model(path)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    context = {"initializers": initializers, "producers": producers, "consumers": consumers,
               "nodes": list(graph.node), "path": path}
    derived = {value.name for value in graph.input} - set(initializers)
    found: dict[str, tuple[Any, WeightSource, list[str]]] = {}  # name -> (first node, weight, aliases)
    first: str | None = None
    for node in graph.node:
        from_input = bool(node.input) and node.input[0] in derived
        if any(name in derived for name in node.input if name):
            derived.update(node.output)
        if node.op_type not in _CONV_OPS or node.domain not in ONNX_DOMAINS:
            continue
        source = conv_weight(path, node, context)
        if source is None:
            continue
        name = source.key[: -len(".weight")] if source.key.endswith(".weight") else (node.name or source.key)
        if first is None and from_input:
            first = name
        # A weight used by several Conv nodes is one layer; every node's name selects it.
        entry = found.setdefault(name, (node, source, []))
        weight_input = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
        entry[2].extend(alias for alias in (node.name, weight_input) if alias)
    candidates = []
    for name, (node, source, aliases) in found.items():
        bn = batchnorm_after(node, context)
        note = folded_bn_note(node, context) if bn is None and name == first else None
        candidates.append(
            ConvCandidate(
                name=name,
                key=source.key,
                shape=source.dims,
                fetch=source.fetch,
                aliases=tuple(aliases),
                batchnorm=lambda bn=bn: bn,  # type: ignore[misc]
                stem=stem_before(node, source.dims[1], context) if name == first else None,
                quantization=source.quantization,
                notes=(note,) if note else (),
            )
        )
    constants = [
        (node.output[0], tensor)
        for node in graph.node
        if node.op_type == "Constant"
        and node.output
        and (tensor := constant_tensor(node)) is not None
        and hasattr(tensor, "dims")
    ]
    stored = [(t.name, t) for t in graph.initializer] + constants
    if candidates:
        return graph_inventory(path, "onnx", candidates, first, [(name, tuple(int(d) for d in t.dims)) for name, t in stored])
    entries = [
        (name, tensor_dims(path, name, t) if is_float(t) and len(t.dims) == 4 else tuple(int(d) for d in t.dims),
         is_float(t), tensor_fetch(path, name, t))
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

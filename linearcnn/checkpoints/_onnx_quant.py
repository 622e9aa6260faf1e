"""The weights of an ONNX convolution node, float or quantized, as float64 (K, C, kh, kw).

* `Conv`: the weight input, followed back through `Identity`/`Cast` to an initializer or
  `Constant`; when it comes from a `DequantizeLinear` (the QDQ format), that node's integer
  tensor is dequantized with its scale and zero point along its `axis` (default 1; per-channel
  weights use axis 0).
* `QLinearConv`: inputs 3, 4, 5 are the integer weight, its scale and its zero point (one value,
  or one per output channel, axis 0).
* `ConvInteger`: input 1 is the integer weight, input 3 its zero point; the scale is not an input
  of the node. Dynamic quantization (onnxruntime) multiplies the node's output, after a `Cast`, by
  `x_scale * w_scale`, so the stored factor of that `Mul` is taken as the weight scale. When no
  such factor is found the weights are (q - zero_point), in quantization steps, and the
  description says so.

Dequantization is w = (q - zero_point) * scale, computed in float64. Scales must be finite and
positive and have one value or one per channel of the quantized axis; anything else is a one-line
error naming the file and tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn.checkpoints._onnx_tensors import (
    is_float,
    tensor_dims,
    tensor_fetch,
    weight_source,
    where,
)
from linearcnn.errors import LinearCNNInputError

#: ONNX integer element types a quantized weight may have: UINT8, INT8, UINT16, INT16, INT32.
_INTEGER_TYPES = {2, 3, 4, 5, 6}


@dataclass(frozen=True)
class WeightSource:
    """Where a convolution node's weight is stored and how to read it."""

    key: str  # initializer (or Constant output) holding the stored tensor
    dims: tuple[int, ...]
    fetch: Callable[[], np.ndarray]  # float64, dequantized when quantized
    quantization: str | None = None  # how it is dequantized, in words; None for float weights


def _stored(name: str, graph: dict[str, Any]) -> tuple[str, Any] | None:
    if not name:
        return None
    return weight_source(name, graph["initializers"], graph["producers"])


def _int_attribute(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _dequantizer(
    path: Path, key: str, tensor: Any, scale: tuple[str, Any] | None, zero: tuple[str, Any] | None, axis: int
) -> Callable[[], np.ndarray]:
    """A zero-argument reader of (q - zero_point) * scale, scale and zero point broadcast along `axis`."""

    def fetch() -> np.ndarray:
        dims = tensor_dims(path, key, tensor)
        q = tensor_fetch(path, key, tensor)()
        along = dims[axis] if -len(dims) <= axis < len(dims) else 0
        shape = [1] * len(dims)
        if along:
            shape[axis] = along
        factors: list[np.ndarray] = []
        for label, source, default in (("scale", scale, 1.0), ("zero point", zero, 0.0)):
            if source is None:
                factors.append(np.full(1, default))
                continue
            values = tensor_fetch(path, source[0], source[1])().reshape(-1)
            if values.size not in (1, along):
                raise LinearCNNInputError(
                    f"{where(path, key)}: its {label} {source[0]!r} has {values.size} values; expected 1 or "
                    f"{along} (one per channel of axis {axis} of shape {dims})"
                )
            factors.append(values.reshape(shape) if values.size > 1 else values)
        step, zero_point = factors
        if scale is not None and (not np.all(np.isfinite(step)) or np.any(step <= 0)):
            raise LinearCNNInputError(
                f"{where(path, key)}: its scale {scale[0]!r} holds a value that is not a finite positive number"
            )
        return (q - zero_point) * step

    return fetch


def _quantized(
    path: Path, q: tuple[str, Any] | None, scale: tuple[str, Any] | None, zero: tuple[str, Any] | None, axis: int,
    how: str,
) -> WeightSource | None:
    if q is None or len(q[1].dims) != 4 or q[1].data_type not in _INTEGER_TYPES:
        return None
    key, tensor = q
    dims = tensor_dims(path, key, tensor)
    if scale is None:
        return WeightSource(key, dims, _dequantizer(path, key, tensor, None, zero, 0), how)
    if not is_float(scale[1]):
        raise LinearCNNInputError(f"{where(path, scale[0])} is the scale of weight {key!r} but is not floating-point")
    per = "per-channel" if int(np.prod(scale[1].dims)) > 1 else "per-tensor"
    return WeightSource(key, dims, _dequantizer(path, key, tensor, scale, zero, axis),
                        f"{how}, dequantized as (q - zero_point) * scale ({per})")


def _convinteger_scale(node: Any, graph: dict[str, Any]) -> tuple[str, Any] | None:
    """The stored weight scale of a dynamically quantized `ConvInteger`: output -> Cast -> Mul by
    (x_scale * w_scale) or by a stored factor."""
    consumers = graph["consumers"]
    value = node.output[0] if node.output else ""
    for _ in range(4):
        for user in consumers.get(value, []):
            if user.op_type == "Cast" and user.output:
                value = user.output[0]
                break
            if user.op_type == "Mul" and len(user.input) == 2:
                other = user.input[1] if user.input[0] == value else user.input[0]
                found = _stored(other, graph)
                if found is not None and is_float(found[1]):
                    return found
                producer = graph["producers"].get(other)
                if producer is not None and producer.op_type == "Mul":
                    stored = [s for s in (_stored(n, graph) for n in producer.input) if s is not None and is_float(s[1])]
                    if len(stored) == 1:
                        return stored[0]
                return None
        else:
            return None
    return None


def conv_weight(path: Path, node: Any, graph: dict[str, Any]) -> WeightSource | None:
    """The weight of the convolution node `node` (`Conv`, `QLinearConv` or `ConvInteger`), or None
    when it is not a 4-D stored tensor. `graph` holds "initializers", "producers" (value -> node)
    and "consumers" (value -> nodes)."""
    inputs = list(node.input)
    if node.op_type == "QLinearConv":
        if len(inputs) < 6:
            return None
        return _quantized(path, _stored(inputs[3], graph), _stored(inputs[4], graph), _stored(inputs[5], graph), 0,
                          "QLinearConv integer weights")
    if node.op_type == "ConvInteger":
        if len(inputs) < 2:
            return None
        zero = _stored(inputs[3], graph) if len(inputs) > 3 else None
        source = _quantized(path, _stored(inputs[1], graph), _convinteger_scale(node, graph), zero, 0,
                            "ConvInteger integer weights")
        if source is not None and source.quantization == "ConvInteger integer weights":
            return WeightSource(source.key, source.dims, source.fetch,
                                "ConvInteger integer weights; no weight scale found, so the weights are "
                                "(q - zero_point) in quantization steps, right up to one positive factor")
        return source
    if len(inputs) < 2:
        return None
    name = inputs[1]
    for _ in range(16):  # through Identity/Cast to a stored tensor or a DequantizeLinear
        stored = _stored(name, graph)
        if stored is not None:
            if len(stored[1].dims) != 4 or not is_float(stored[1]):
                return None
            return WeightSource(stored[0], tensor_dims(path, *stored), tensor_fetch(path, *stored))
        producer = graph["producers"].get(name)
        if producer is None:
            return None
        if producer.op_type == "DequantizeLinear" and len(producer.input) >= 2:
            zero = _stored(producer.input[2], graph) if len(producer.input) > 2 else None
            return _quantized(path, _stored(producer.input[0], graph), _stored(producer.input[1], graph), zero,
                              _int_attribute(producer, "axis", 1), "QDQ: DequantizeLinear of integer weights")
        if producer.op_type not in ("Identity", "Cast") or not producer.input:
            return None
        name = producer.input[0]
    return None


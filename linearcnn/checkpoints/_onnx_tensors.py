"""Reading ONNX tensors safely: shapes and data sizes checked before NumPy sees them, and weights
followed back from a node's input to the initializer or `Constant` node that stores them.

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

from linearcnn.errors import LinearCNNInputError

PASS_THROUGH = {"Identity", "Cast"}
ONNX_DOMAINS = {"", "ai.onnx"}


def where(path: Path, name: str) -> str:
    return f"checkpoint {str(path)!r}: ONNX tensor {name!r}"


def tensor_dims(path: Path, name: str, tensor: Any) -> tuple[int, ...]:
    """The declared shape of `tensor`; negative dimensions are refused."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise LinearCNNInputError(f"{where(path, name)} declares shape {dims}; expected dimensions >= 0")
    return dims


#: Where a floating-point TensorProto keeps its values when not in `raw_data`: (field, values per element).
_TYPED_FIELDS = {1: "float_data", 11: "double_data", 10: "int32_data", 16: "int32_data", 2: "int32_data", 3: "int32_data",
                 4: "int32_data", 5: "int32_data", 6: "int32_data"}  # FLOAT, DOUBLE, FLOAT16, BFLOAT16, (U)INT8/16, INT32


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
        if field is None:  # other types are never fetched as weights
            return
        held, expected, unit = len(getattr(tensor, field)), count, f"values in {field}"
    if held != expected:
        raise LinearCNNInputError(
            f"{where(path, name)} declares shape {dims} ({count:,} elements of "
            f"{helper.tensor_dtype_to_np_dtype(tensor.data_type)}) but holds {held:,} {unit}; expected {expected:,}"
        )


def tensor_fetch(path: Path, name: str, tensor: Any) -> Callable[[], np.ndarray]:
    """A zero-argument reader of `tensor` as float64, its data checked against its shape first."""

    def fetch() -> np.ndarray:
        from onnx import numpy_helper

        dims = tensor_dims(path, name, tensor)
        _check_data_size(path, name, tensor, dims)
        try:
            values = numpy_helper.to_array(tensor)
        except Exception as exc:  # any failure to decode a user's tensor is bad input
            raise LinearCNNInputError(
                f"{where(path, name)}: cannot decode its data ({type(exc).__name__}: {str(exc)[:160]}); "
                "expected values matching its shape and type"
            ) from None
        return np.asarray(values, dtype=np.float64)

    return fetch


def is_float(tensor: Any) -> bool:
    from onnx import TensorProto

    return tensor.data_type in {
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
    }


def constant_tensor(node: Any) -> Any | None:
    """The TensorProto a `Constant` node holds in its `value` attribute, or None."""
    from onnx import AttributeProto

    for attribute in node.attribute:
        if attribute.name == "value" and attribute.type == AttributeProto.TENSOR:
            return attribute.t
    return None


def weight_source(
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
            tensor = constant_tensor(node)
            return (name, tensor) if tensor is not None else None
        if node.op_type in PASS_THROUGH and node.input:
            name = node.input[0]
            continue
        return None
    return None

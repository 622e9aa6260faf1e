"""What surrounds a convolution in an ONNX graph: a pixel-rearranging stem before it, a
BatchNorm after it, and signs that the export folded a BatchNorm into it.

* **Space-to-depth stems** (`stem_before`): the convolution's data input, followed back through
  `Identity`/`Cast`/`QuantizeLinear`/`DequantizeLinear`, comes from
  - a `Concat` of 4 (or 9, 16, ...) inputs that are each one or two `Slice` nodes of one tensor
    (YOLOv5's Focus: `x[..., ::2, ::2]`, `x[..., 1::2, ::2]`, ...): b x b blocks, b = 2 for 4;
  - a `SpaceToDepth` node (attribute `blocksize`);
  - `Reshape` <- `Transpose` <- `Reshape` (how `torch.nn.functional.pixel_unshuffle` exports; the
    block size is read from the first, 6-D `Reshape`'s stored shape when it can be).
  Such a convolution sees b*b*c channels, each a pixel of a b x b block of a c-channel image, so
  its patches are not image patches.
* **BatchNorm** (`batchnorm_after`): a `BatchNormalization` node whose input is the Conv's output.
* **BatchNorm folded by the export** (`folded_bn_note`): a heuristic. The Conv has a bias, no
  BatchNormalization follows it but an activation does, no BatchNormalization is left anywhere in
  the graph, and every other Conv has a bias too: what `torch.onnx.export` of an eval-mode network
  with BatchNorm produces. A network built without BatchNorm (VGG, AlexNet) looks the same, so
  this is reported as an appearance, never acted on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from linearcnn.checkpoints._batchnorm import BatchNormRef
from linearcnn.checkpoints._onnx_tensors import is_float, tensor_fetch, weight_source

_THROUGH = {"Identity", "Cast", "QuantizeLinear", "DequantizeLinear"}
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "PRelu", "Elu", "Selu", "Mish"}

#: The one sentence of `folded_bn_note`.
FOLDED_BN_NOTE = (
    "BatchNorm appears folded into this Conv by the export (per-filter scales differ from the unfolded layer)"
)


def _producer(name: str, producers: dict[str, Any]) -> Any | None:
    """The node behind the value `name`, skipped through nodes that do not move pixels."""
    for _ in range(8):
        node = producers.get(name)
        if node is None or node.op_type not in _THROUGH or not node.input:
            return node
        name = node.input[0]
    return None


def _slice_root(name: str, producers: dict[str, Any]) -> str | None:
    """The tensor a chain of one or two `Slice` nodes starts from, or None."""
    depth = 0
    while (node := producers.get(name)) is not None and node.op_type == "Slice" and node.input:
        name, depth = node.input[0], depth + 1
        if depth > 2:
            return None
    return name if depth else None


def _reshape_block(node: Any, graph: dict[str, Any]) -> int | None:
    """b of a 6-D Reshape to (N, C, H/b, b, W/b, b), read from its stored shape, or None."""
    if len(node.input) < 2:
        return None
    stored = weight_source(node.input[1], graph["initializers"], graph["producers"])
    if stored is None or len(stored[1].dims) != 1 or stored[1].dims[0] != 6:
        return None
    try:
        shape = tensor_fetch(graph["path"], *stored)()
    except Exception:  # an unreadable shape only leaves the block size unnamed
        return None
    return int(shape[3]) if shape[3] == shape[5] and shape[3] > 1 else None


def _stem(node: Any, graph: dict[str, Any]) -> tuple[str, int | None] | None:
    """(name of the stem, block size b or None) when `node` is a space-to-depth stem."""
    producers = graph["producers"]
    if node.op_type == "SpaceToDepth":
        block = next((int(a.i) for a in node.attribute if a.name == "blocksize"), None)
        return "SpaceToDepth", block
    if node.op_type == "Concat" and len(node.input) >= 4:
        roots = {_slice_root(name, producers) for name in node.input}
        n = len(node.input)
        if None not in roots and len(roots) == 1 and math.isqrt(n) ** 2 == n:
            return "Focus: Slice+Concat", math.isqrt(n)
    if node.op_type == "Reshape" and node.input:
        transpose = _producer(node.input[0], producers)
        if transpose is not None and transpose.op_type == "Transpose" and transpose.input:
            first = _producer(transpose.input[0], producers)
            if first is not None and first.op_type == "Reshape":
                return "pixel_unshuffle: Reshape+Transpose+Reshape", _reshape_block(first, graph)
    return None


def stem_before(conv: Any, channels: int, graph: dict[str, Any]) -> str | None:
    """Why the convolution `conv`, with `channels` input channels, does not see image patches,
    in words, when a space-to-depth stem feeds it; else None."""
    data = conv.input[0] if conv.input else ""
    node = _producer(data, graph["producers"])
    found = None if node is None else _stem(node, graph)
    if found is None:
        return None
    name, block = found
    if block and channels % (block * block) == 0:
        blocks = f"{block}x{block} pixel blocks of {channels // (block * block)}-channel images"
    else:
        blocks = "pixel blocks of images"
    return (
        f"the first Conv follows a space-to-depth stem ({name}), so its {channels} input channels are {blocks}; "
        "patches of such a layer are not image patches"
    )


def _float_input(name: str, graph: dict[str, Any], path: Path) -> Any:
    stored = weight_source(name, graph["initializers"], graph["producers"]) if name else None
    if stored is None or not is_float(stored[1]):
        return None
    return tensor_fetch(path, *stored)


def batchnorm_after(conv: Any, graph: dict[str, Any]) -> BatchNormRef | None:
    """The `BatchNormalization` node reading the output of `conv`, with stored scale and variance."""
    if not conv.output:
        return None
    for user in graph["consumers"].get(conv.output[0], []):
        if user.op_type != "BatchNormalization" or len(user.input) < 5 or user.input[0] != conv.output[0]:
            continue
        gamma, var = _float_input(user.input[1], graph, graph["path"]), _float_input(user.input[4], graph, graph["path"])
        if gamma is None or var is None:
            return None
        eps = next((float(a.f) for a in user.attribute if a.name == "epsilon"), 1e-5)
        return BatchNormRef(name=user.name or user.output[0], var=var, gamma=gamma, eps=eps,
                            eps_source="stored in the file" if any(a.name == "epsilon" for a in user.attribute)
                            else "ONNX default")
    return None


def _has_bias(node: Any) -> bool:
    return len(node.input) >= 3 and bool(node.input[2])


def folded_bn_note(conv: Any, graph: dict[str, Any]) -> str | None:
    """`FOLDED_BN_NOTE` when the graph looks as if the export folded a BatchNorm into `conv`."""
    nodes = graph["nodes"]
    if conv.op_type != "Conv" or not _has_bias(conv) or not conv.output:
        return None
    if any(node.op_type == "BatchNormalization" for node in nodes):
        return None
    users = {user.op_type for user in graph["consumers"].get(conv.output[0], [])}
    others = [node for node in nodes if node.op_type == "Conv" and node is not conv]
    if users & _ACTIVATIONS and others and all(_has_bias(node) for node in others):
        return FOLDED_BN_NOTE
    return None


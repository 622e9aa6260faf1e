"""TorchScript archives (`torch.jit.save`): weights and the order in which the code uses them,
read without running anything from the file.

`torch.jit.load` would run the archive's own code while loading (a crafted class's `__setstate__`
can print, loop forever, ...), so by default it is never called:

1. `_safe_unpickle.read_archive` unpickles `data.pkl` and `constants.pkl` with an allow-list
   unpickler: TorchScript objects become inert `ScriptObject`s recording their state, tensors
   become `StoredTensor`s checked against their storage entries (read only when used).
2. The module tree is walked for its parameters and buffers (`features.0.weight`), in the order
   `state_dict()` lists them (each module's own parameters, then buffers, then submodules).
3. `_script_code.convolution_order` reads the `code/` files as text and follows `forward`: the
   first convolution whose input is derived from the network's input is the first layer (frozen
   modules' constant weights are named `conv0`, `conv1`, ... in that order). When the code cannot
   be followed, or has no convolution, parameter order and the shape rule apply.

With `unsafe_load` (trusted files only) the archive is loaded by `torch.jit.load` instead and
its compiled graph gives the order (`_torchscript_jit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linearcnn.checkpoints._inventory import (
    ConvCandidate,
    Inventory,
    canonical_name,
    graph_inventory,
    layer_name,
    tensor_candidates,
)
from linearcnn.checkpoints._safe_unpickle import Archive, ScriptObject, StoredTensor, float64_reader, read_archive
from linearcnn.checkpoints._script_code import CodeIndex, convolution_order
from linearcnn.errors import LinearCNNInputError

_MAX_DEPTH = 64


def _named_tensors(index: CodeIndex, obj: Any, prefix: str, out: list[tuple[str, StoredTensor]], seen: set[int], depth: int = 0) -> None:
    """Append the (dotted name, tensor) pairs of a module tree to `out`, in `state_dict()` order:
    a module's declared parameters, then its buffers, then its submodules (attribute order)."""
    if depth > _MAX_DEPTH or id(obj) in seen:
        return
    seen.add(id(obj))
    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    if isinstance(obj, ScriptObject):
        state = obj.state
        if isinstance(state, dict):
            declared = index.declared_tensors(obj.qualname)
            tensors = [k for k, v in state.items() if isinstance(k, str) and isinstance(v, StoredTensor)]
            if declared is not None:  # only parameters and buffers, as state_dict() lists them
                tensors = [k for k in declared[0] + declared[1] if k in tensors]
            out.extend((join(k), state[k]) for k in tensors)
            for key, value in state.items():
                if isinstance(key, str) and isinstance(value, ScriptObject):
                    _named_tensors(index, value, join(key), out, seen, depth + 1)
        else:  # state from a custom __getstate__ (a tuple, say): its tensors by position
            _named_tensors(index, state, prefix, out, seen, depth + 1)
    elif isinstance(obj, (tuple, list)):
        for position, value in enumerate(obj):
            if isinstance(value, StoredTensor):
                out.append((join(str(position)), value))
            else:
                _named_tensors(index, value, join(str(position)), out, seen, depth + 1)


def _graph_candidates(path: Path, archive: Archive, index: CodeIndex) -> tuple[list[ConvCandidate], str | None]:
    """Convolutions in the order the code applies them, and the first one applied to the input."""
    uses = convolution_order(archive.code, archive.root, archive.constants) or []
    candidates: list[ConvCandidate] = []
    first: str | None = None
    by_key: dict[str, str] = {}
    for use in uses:
        if use.key not in by_key:
            if not use.weight.dtype.is_floating_point:
                continue
            constant = use.key.startswith("CONSTANTS.")
            name = f"conv{len(candidates)}" if constant else (layer_name(use.key) or use.key)
            by_key[use.key] = name
            candidates.append(
                ConvCandidate(
                    name=name,
                    key=use.key,
                    shape=use.weight.shape,
                    fetch=float64_reader(path, use.weight, "TorchScript archive"),
                    aliases=(canonical_name(use.key),),
                )
            )
        if first is None and use.from_input:
            first = by_key[use.key]
    return candidates, first


def _safe_inventory(path: Path) -> Inventory:
    archive = read_archive(path)
    if not isinstance(archive.root, ScriptObject):
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: TorchScript archive holds a {type(archive.root).__name__}, expected a scripted module"
        )
    index = CodeIndex(archive.code)
    stored: list[tuple[str, StoredTensor]] = []
    _named_tensors(index, archive.root, "", stored, set())
    stored += [(f"CONSTANTS.c{i}", c) for i, c in enumerate(archive.constants) if isinstance(c, StoredTensor)]
    candidates, first = _graph_candidates(path, archive, index)
    if candidates:
        return graph_inventory(path, "torchscript", candidates, first, [(k, t.shape) for k, t in stored])
    entries = [(key, t.shape, t.dtype.is_floating_point, float64_reader(path, t, "TorchScript archive")) for key, t in stored]
    found, others = tensor_candidates(entries)
    return Inventory(
        path=str(path),
        format="torchscript",
        candidates=found,
        order="parameter order (no convolution found in the forward graph)",
        other_tensors=others,
    )


def torchscript_inventory(path: Path, *, unsafe_load: bool = False) -> Inventory:
    """Inventory of a TorchScript archive (module docstring): read as data, nothing from it run,
    unless `unsafe_load`, which loads it with `torch.jit.load` (trusted files only)."""
    if unsafe_load:
        from linearcnn.checkpoints._torchscript_jit import jit_inventory

        return jit_inventory(path)
    return _safe_inventory(path)


__all__ = ["torchscript_inventory"]

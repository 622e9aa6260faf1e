"""The BatchNorm that follows a convolution, and folding it into the convolution's filters.

A convolution followed by BatchNorm computes, per filter k, gamma_k * (w_k * x - mean_k) /
sqrt(var_k + eps) + beta_k, so the filters the network effectively applies are
w_k * gamma_k / sqrt(var_k + eps) (`fold_batchnorm`); the shift terms only change the bias.

Where the BatchNorm is found:

* state dicts (and other named tensors): `following_batchnorm` takes the tensor group whose key
  prefix comes next in stored order after the convolution's own tensors (`bn1.*` after
  `conv1.weight`, `features.1.*` after `features.0.weight`), else, and always for files whose
  order is not the module order (safetensors sorts its names), a sibling named like the
  convolution (`conv1` -> `bn1`, `...convolution` -> `...normalization`, `features.0` ->
  `features.1`, `conv_stem` -> `bn1`). A group counts as BatchNorm only when it holds
  `running_mean` and `running_var` of K values (LayerNorm/GroupNorm hold neither). The eps is not
  stored in a state dict: PyTorch's default 1e-5 is used and said so.
* ONNX: a `BatchNormalization` node consuming the Conv's output (`linearcnn.checkpoints._onnx`);
* Keras: a `BatchNormalization` layer right after the Conv2D in the model's layer list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from linearcnn.errors import LinearCNNInputError

#: PyTorch's BatchNorm eps, used for state dicts (which do not store it).
TORCH_EPS = 1e-5


@dataclass(frozen=True)
class BatchNormRef:
    """A BatchNorm layer following a convolution: what folding needs from it."""

    name: str  # layer name as stored, e.g. "bn1"
    var: Callable[[], np.ndarray]  # running variance, (K,)
    gamma: Callable[[], np.ndarray] | None  # scale, (K,); None when the layer has none (gamma = 1)
    eps: float
    eps_source: str  # "stored in the file" or "PyTorch default, not stored in a state dict"


def fold_batchnorm(weight: np.ndarray, bn: BatchNormRef, what: str) -> np.ndarray:
    """`weight` (K, C, kh, kw) with filter k multiplied by gamma_k / sqrt(var_k + eps)."""
    k = weight.shape[0]
    var = np.asarray(bn.var(), dtype=np.float64).reshape(-1)
    gamma = np.ones(k) if bn.gamma is None else np.asarray(bn.gamma(), dtype=np.float64).reshape(-1)
    for label, values in (("running variance", var), ("scale (gamma)", gamma)):
        if values.shape != (k,):
            raise LinearCNNInputError(
                f"{what}: BatchNorm {bn.name!r} {label} has {values.size} values; expected {k}, one per filter"
            )
        if not np.all(np.isfinite(values)):
            raise LinearCNNInputError(f"{what}: BatchNorm {bn.name!r} {label} holds NaN or infinite values")
    if np.any(var + bn.eps <= 0):
        raise LinearCNNInputError(
            f"{what}: BatchNorm {bn.name!r} has running variance + eps <= 0 for "
            f"{int(np.count_nonzero(var + bn.eps <= 0))} filter(s); expected positive variances"
        )
    scale = gamma / np.sqrt(var + bn.eps)
    return weight * scale[:, None, None, None]


Entry = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]  # (canonical key, shape, fetch)


def _groups(entries: Sequence[Entry]) -> dict[str, dict[str, Entry]]:
    """Tensors by layer prefix: {"bn1": {"weight": ..., "running_var": ...}}."""
    groups: dict[str, dict[str, Entry]] = {}
    for entry in entries:
        prefix, _, leaf = entry[0].rpartition(".")
        groups.setdefault(prefix, {})[leaf] = entry
    return groups


def _as_batchnorm(name: str, group: dict[str, Entry] | None, filters: int) -> BatchNormRef | None:
    if group is None or "running_var" not in group or "running_mean" not in group:
        return None
    if any(group[leaf][1] != (filters,) for leaf in ("running_var", "running_mean")):
        return None
    gamma = group.get("weight")
    if gamma is not None and gamma[1] != (filters,):
        return None
    return BatchNormRef(
        name=name,
        var=group["running_var"][2],
        gamma=None if gamma is None else gamma[2],
        eps=TORCH_EPS,
        eps_source="PyTorch default, not stored in a state dict",
    )


_SIBLINGS: tuple[tuple[str, str], ...] = (
    (r"^conv_stem$", "bn1"),  # timm EfficientNet / MobileNet
    (r"^convolution$", "normalization"),  # Hugging Face ResNet / RegNet
    (r"^conv(\d*)$", r"bn\1"),
    (r"^conv(\d*)$", r"norm\1"),
    (r"^conv$", "batch_norm"),
)


def _sibling_names(layer: str) -> list[str]:
    """Names a BatchNorm following `layer` usually has (`conv1` -> `bn1`, `features.0` -> `features.1`)."""
    prefix, _, last = layer.rpartition(".")
    join = (lambda leaf: f"{prefix}.{leaf}") if prefix else (lambda leaf: leaf)
    names = [join(re.sub(pattern, repl, last)) for pattern, repl in _SIBLINGS if re.match(pattern, last)]
    if last.isdigit():
        names.append(join(str(int(last) + 1)))
    return names


def following_batchnorm(
    entries: Sequence[Entry], index: int, filters: int, *, stored_order: bool
) -> BatchNormRef | None:
    """The BatchNorm following the convolution weight `entries[index]` (see the module docstring)."""
    groups = _groups(entries)
    layer = entries[index][0].rpartition(".")[0]
    if stored_order:
        for key, _, _ in entries[index + 1 :]:
            prefix = key.rpartition(".")[0]
            if prefix != layer:  # skip the convolution's own bias
                found = _as_batchnorm(prefix, groups.get(prefix), filters)
                if found is not None:
                    return found
                break
    for name in _sibling_names(layer):
        found = _as_batchnorm(name, groups.get(name), filters)
        if found is not None:
            return found
    return None

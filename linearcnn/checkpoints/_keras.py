"""Keras files: `.keras` (Keras 3: a zip of `config.json` and `model.weights.h5`), Keras 3
`.weights.h5`, and legacy Keras 2 `.h5` (`model.save("x.h5")` / `save_weights`), read with h5py.

h5py is an optional dependency (`pip install 'linearcnn[keras]'`); without it these files are one
line saying so. Nothing is executed: the model's config is JSON, read for the order and classes of
its layers, and HDF5 holds data only.

Layouts:

* Keras 3: a layer's variables are datasets `vars/0`, `vars/1`, ... in the group of the layer,
  `layers/<name>` (nested models: `layers/<model>/layers/<name>`). A convolution's kernel is
  `vars/0`; a BatchNormalization's are gamma, beta, moving_mean, moving_variance (gamma absent
  when `scale` is false, beta when `center` is false).
* Legacy: the root (`save_weights`) or `model_weights` (`model.save`) has the attribute
  `layer_names`, each layer group the attribute `weight_names` (`conv2d/kernel:0`, ...), and the
  datasets sit at `<layer>/<weight name>`. The model's config is the root attribute `model_config`.

Layers are ordered as the config lists them (Sequential and Functional configs list layers in
order), else as `layer_names` does, else by name; the usual shape rule then picks the first layer.
With a config, only `Conv2D` layers count (not `DepthwiseConv2D`, `SeparableConv2D` or
`Conv2DTranspose`, whose kernels are laid out differently). Kernels are stored HWIO,
(kh, kw, C, K), and are returned as (K, C, kh, kw). The BatchNorm folded by `fold_bn` is the
`BatchNormalization` layer listed right after the convolution in the config (its `epsilon` from
the config, Keras' default 1e-3 otherwise).

Reading is bounded: only links inside the file are followed (no external or soft links, no
virtual or externally stored datasets), the walk visits at most `MAX_OBJECTS` objects, and a
dataset's shape and dtype are checked before it is read (at most `MAX_ELEMENTS` values); only the
chosen kernel and, when folding, its BatchNorm's datasets are ever read.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from linearcnn._npz import MAX_ELEMENTS
from linearcnn.checkpoints._batchnorm import BatchNormRef
from linearcnn.checkpoints._inventory import ConvCandidate, Inventory, natural_key
from linearcnn.errors import LinearCNNInputError

MAX_OBJECTS = 100_000
_MAX_DEPTH = 12
_CONV_CLASSES = {"Conv2D", "Convolution2D"}
_KERAS_BN_EPS = 1e-3


def _h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: reading .keras/.h5 needs h5py: pip install 'linearcnn[keras]'"
        ) from None
    return h5py


def _bad(path: Path, what: str) -> LinearCNNInputError:
    return LinearCNNInputError(f"checkpoint {str(path)!r}: {what}")


@contextmanager
def _opened(path: Path, zipped: bool) -> Iterator[Any]:
    """The HDF5 file of `path` (inside the zip for `.keras`), open for reading; any failure to
    read it becomes a one-line error."""
    h5py = _h5py(path)
    try:
        if zipped:
            with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member:
                with h5py.File(member, "r") as handle:
                    yield handle
        else:
            with h5py.File(path, "r") as handle:
                yield handle
    except LinearCNNInputError:
        raise
    except Exception as exc:  # any failure to parse a user's file is bad input
        raise _bad(path, f"cannot read HDF5 weights, truncated or corrupt? ({type(exc).__name__}: {str(exc)[:160]})"
                   ) from None


def _child(path: Path, group: Any, name: str) -> Any | None:
    """`group[name]` when it is a hard link inside the file (soft and external links are refused)."""
    h5py = _h5py(path)
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise _bad(path, f"HDF5 object {group.name}/{name} is a {type(link).__name__}; expected data stored in the file")
    return group[name]


def _resolve(path: Path, handle: Any, where: str) -> Any:
    """The object at the absolute path `where`, through hard links only."""
    node = handle
    for part in where.strip("/").split("/"):
        node = _child(path, node, part) if hasattr(node, "get") else None
        if node is None:
            raise _bad(path, f"HDF5 dataset /{where.strip('/')} is missing")
    return node


def _checked_dataset(path: Path, dataset: Any) -> Any:
    """`dataset` after checking it is a floating-point array stored in the file within `MAX_ELEMENTS`."""
    h5py = _h5py(path)
    if not isinstance(dataset, h5py.Dataset):
        raise _bad(path, f"HDF5 object {dataset.name} is a group; expected a dataset")
    if dataset.is_virtual or dataset.external:
        raise _bad(path, f"HDF5 dataset {dataset.name} refers to data outside the file; expected stored data")
    if dataset.dtype.kind != "f":
        raise _bad(path, f"HDF5 dataset {dataset.name} has dtype {dataset.dtype}; expected floating-point weights")
    if dataset.size > MAX_ELEMENTS:
        raise _bad(path, f"HDF5 dataset {dataset.name} has {dataset.size:,} values; expected at most {MAX_ELEMENTS:,}")
    return dataset


def _reader(path: Path, zipped: bool, where: str, transpose: bool) -> Callable[[], np.ndarray]:
    """A zero-argument reader of the dataset at `where`, as float64 ((K, C, kh, kw) when `transpose`)."""

    def fetch() -> np.ndarray:
        with _opened(path, zipped) as handle:
            values = np.asarray(_checked_dataset(path, _resolve(path, handle, where))[()], dtype=np.float64)
        return np.transpose(values, (3, 2, 0, 1)) if transpose else values

    return fetch


def _layers_in_config(config: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, class_name, config) of every layer a Keras model config lists, nested models
    included, in the order listed."""
    found: list[tuple[str, str, dict[str, Any]]] = []

    def visit(node: Any, depth: int) -> None:
        if depth > 40 or len(found) > MAX_OBJECTS:
            return
        if isinstance(node, dict):
            inner = node.get("config")
            if isinstance(node.get("class_name"), str) and isinstance(inner, dict) and isinstance(inner.get("name"), str):
                found.append((inner["name"], node["class_name"], inner))
            for value in node.values():
                visit(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                visit(value, depth + 1)

    visit(config, 0)
    return found


def _parse_config(path: Path, text: str | bytes | None) -> list[tuple[str, str, dict[str, Any]]]:
    if text is None:
        return []
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"the model config is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    return _layers_in_config(config)


def _walk_keras3(path: Path, handle: Any) -> list[tuple[str, dict[str, Any]]]:
    """(layer path, {var index: dataset}) of every group holding `vars`, in name order."""
    h5py = _h5py(path)
    found: list[tuple[str, dict[str, Any]]] = []
    seen = 0

    def visit(group: Any, depth: int) -> None:
        nonlocal seen
        for name in sorted(group.keys(), key=natural_key):
            seen += 1
            if seen > MAX_OBJECTS or depth > _MAX_DEPTH:
                raise _bad(path, f"HDF5 file has more than {MAX_OBJECTS:,} objects or {_MAX_DEPTH} levels")
            child = _child(path, group, name)
            if not isinstance(child, h5py.Group) or (depth == 0 and name == "optimizer"):
                continue
            if name == "vars":
                found.append((group.name.strip("/"), {key: _child(path, child, key) for key in child.keys() if key.isdigit()}))
            else:
                visit(child, depth + 1)

    visit(handle, 0)
    return found


def _legacy_layers(path: Path, handle: Any) -> tuple[Any, list[str]] | None:
    """(group holding the layers, layer names in order) of a legacy Keras file, or None."""
    root = _child(path, handle, "model_weights") if "model_weights" in handle else handle
    names = root.attrs.get("layer_names") if root is not None else None
    if names is None:
        return None
    return root, [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def keras_inventory(path: Path, *, zipped: bool) -> Inventory:
    """Inventory of a `.keras` zip (`zipped`) or a Keras HDF5 file (see the module docstring)."""
    config_text: str | bytes | None = None
    if zipped:
        with zipfile.ZipFile(path) as archive:
            if "config.json" in archive.namelist():
                if archive.getinfo("config.json").file_size > 64 * 1024 * 1024:
                    raise _bad(path, "config.json is larger than 64 MiB; expected a Keras model config")
                config_text = archive.read("config.json")
    entries: list[tuple[str, str, tuple[int, ...], dict[str, str]]] = []  # (name, kernel path, HWIO shape, vars)
    with _opened(path, zipped) as handle:
        legacy = _legacy_layers(path, handle)
        if not zipped and config_text is None and "model_config" in handle.attrs:
            config_text = _as_text(handle.attrs["model_config"])
        if legacy is not None:
            root, names = legacy
            for name in names:
                group = _child(path, root, name)
                if group is None:
                    raise _bad(path, f"layer_names lists {name!r} but the file has no group for it")
                weight_names = [_as_text(w) for w in group.attrs.get("weight_names", [])]
                datasets = {w.rsplit("/", 1)[-1].split(":")[0]: f"{group.name}/{w}" for w in weight_names}
                kernel = datasets.get("kernel")
                shape = tuple(_resolve(path, handle, kernel).shape) if kernel is not None else ()
                entries.append((name, kernel or "", shape, datasets))
            order = "layer_names order"
        else:
            for layer_path, variables in _walk_keras3(path, handle):
                name = ".".join(part for part in layer_path.split("/") if part != "layers") or layer_path
                shape = tuple(variables["0"].shape) if "0" in variables else ()
                entries.append((name, f"/{layer_path}/vars/0" if "0" in variables else "", shape,
                                {key: f"/{layer_path}/vars/{key}" for key in variables}))
            order = "sorted name order"
    config_layers = _parse_config(path, config_text)
    classes = {name: (cls, cfg) for name, cls, cfg in config_layers}
    if config_layers:
        position = {name: i for i, (name, _, _) in reversed(list(enumerate(config_layers)))}
        entries.sort(key=lambda e: position.get(e[0].rsplit(".", 1)[-1], len(position)))
        order = "layer order of the model config"
    candidates: list[ConvCandidate] = []
    others: list[tuple[str, tuple[int, ...]]] = []
    for index, (name, kernel, shape, _) in enumerate(entries):
        cls = classes.get(name.rsplit(".", 1)[-1], ("", {}))[0]
        if len(shape) != 4 or not kernel or (classes and cls not in _CONV_CLASSES):
            if kernel:
                others.append((kernel, shape))
            continue
        kh, kw, c, k = shape
        following = entries[index + 1] if index + 1 < len(entries) else None
        candidates.append(ConvCandidate(
            name=name, key=kernel, shape=(k, c, kh, kw), fetch=_reader(path, zipped, kernel, transpose=True),
            batchnorm=_bn_finder(path, zipped, following, classes, k, keras3=legacy is None)))
    return Inventory(path=str(path), format="keras" if zipped else "keras-h5", candidates=candidates, order=order,
                     other_tensors=others)


def _bn_finder(
    path: Path, zipped: bool, following: tuple[str, str, tuple[int, ...], dict[str, str]] | None,
    classes: dict[str, tuple[str, dict[str, Any]]], filters: int, *, keras3: bool,
) -> Callable[[], BatchNormRef | None]:
    """Finds the BatchNormalization listed right after a convolution in the model config."""

    def find() -> BatchNormRef | None:
        if following is None:
            return None
        name, _, _, datasets = following
        cls, cfg = classes.get(name.rsplit(".", 1)[-1], ("", {}))
        if cls != "BatchNormalization":
            return None
        if keras3:  # vars: [gamma], [beta], moving_mean, moving_variance
            names = ["gamma"] * bool(cfg.get("scale", True)) + ["beta"] * bool(cfg.get("center", True))
            names += ["moving_mean", "moving_variance"]
            datasets = {label: datasets.get(str(i), "") for i, label in enumerate(names)}
        if not datasets.get("moving_variance"):
            return None
        eps = cfg.get("epsilon", _KERAS_BN_EPS)
        gamma = datasets.get("gamma")
        return BatchNormRef(
            name=name,
            var=_reader(path, zipped, datasets["moving_variance"], transpose=False),
            gamma=_reader(path, zipped, gamma, transpose=False) if gamma else None,
            eps=float(eps) if isinstance(eps, (int, float)) else _KERAS_BN_EPS,
            eps_source="stored in the model config" if "epsilon" in cfg else "Keras default",
        )

    return find

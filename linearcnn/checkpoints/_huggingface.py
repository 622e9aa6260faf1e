"""Hugging Face model folders (`save_pretrained`): the weights file inside, read as data.

The folder's weights are, in this order of preference:

* `model.safetensors`: one safetensors file (header read at once, a tensor when fetched);
* `model.safetensors.index.json` + shards: the index's `weight_map` names, for every tensor, the
  shard holding it. Shard names must be plain file names inside the folder. Only the shards'
  headers are read to list the tensors; the weights are read from the one shard that holds the
  chosen layer (and, with `fold_bn`, the BatchNorm's shard);
* `pytorch_model.bin`: a `torch.save` state dict, read by the safe loader (`weights_only=True`).

A sharded `pytorch_model.bin.index.json` is refused (every shard would have to be unpickled whole);
its shards can be passed one by one. `config.json`, when present, is parsed as JSON (never
executed) for `model_type`: for known vision models the stem convolution of that architecture is
chosen by its name (`_STEMS`); otherwise the usual shape rule applies (safetensors names are
sorted, so the first 3-channel convolution in name order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from linearcnn.checkpoints._arrays import safetensors_entries
from linearcnn.checkpoints._detect import HF_WEIGHT_FILES, sniff_format
from linearcnn.checkpoints._inventory import Inventory, natural_key, tensor_candidates
from linearcnn.errors import LinearCNNInputError

#: Largest `config.json` / index file read (bytes); real ones are a few kilobytes to a few megabytes.
MAX_JSON_BYTES = 64 * 1024 * 1024

#: model_type -> name suffix of that architecture's stem convolution (patch embedding).
_STEMS: dict[str, str] = {
    "resnet": "embedder.embedder.convolution",
    "regnet": "embedder.embedder.convolution",
    "vit": "embeddings.patch_embeddings.projection",
    "deit": "embeddings.patch_embeddings.projection",
    "dinov2": "embeddings.patch_embeddings.projection",
    "vit_mae": "embeddings.patch_embeddings.projection",
    "vit_msn": "embeddings.patch_embeddings.projection",
    "swin": "embeddings.patch_embeddings.projection",
    "beit": "embeddings.patch_embeddings.projection",
    "convnext": "embeddings.patch_embeddings",
    "convnextv2": "embeddings.patch_embeddings",
    "clip": "vision_model.embeddings.patch_embedding",
    "clip_vision_model": "vision_model.embeddings.patch_embedding",
    "siglip": "vision_model.embeddings.patch_embedding",
    "siglip_vision_model": "vision_model.embeddings.patch_embedding",
    "efficientnet": "embeddings.convolution",
}


def _read_json(path: Path, what: str) -> Any:
    """The JSON value in `path` (bounded in size); a one-line error for anything else."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: {what} is {size:,} bytes; expected at most {MAX_JSON_BYTES:,}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LinearCNNInputError(
            f"checkpoint {str(path)!r}: {what} is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def model_type(folder: Path) -> str | None:
    """`model_type` from the folder's `config.json`, or None (absent file or field)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    config = _read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise LinearCNNInputError(
            f"checkpoint {str(config_path)!r}: config.json holds a {type(config).__name__}; expected a JSON object"
        )
    value = config.get("model_type")
    return value if isinstance(value, str) else None


def _shard_path(folder: Path, index_path: Path, shard: Any) -> Path:
    """The shard file `shard` named by the index: a plain file name inside `folder`."""
    if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard in (".", ".."):
        raise LinearCNNInputError(
            f"checkpoint {str(index_path)!r}: weight_map names shard {shard!r}; expected a file name in the same folder"
        )
    target = folder / shard
    if not target.is_file():
        raise LinearCNNInputError(
            f"checkpoint {str(index_path)!r}: shard {shard!r} named by weight_map does not exist beside the index"
        )
    return target


def _sharded_entries(folder: Path, index_path: Path) -> list[tuple[str, tuple[int, ...], bool, Any]]:
    """Entries of every tensor the index lists, from the shards' headers, in natural name order."""
    index = _read_json(index_path, "the index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise LinearCNNInputError(
            f"checkpoint {str(index_path)!r}: no weight_map object (tensor name -> shard file); expected a "
            "safetensors index written by save_pretrained"
        )
    by_shard: dict[Any, list[str]] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            _shard_path(folder, index_path, shard)  # raises: not a file name
        by_shard.setdefault(shard, []).append(key)
    entries: list[tuple[str, tuple[int, ...], bool, Any]] = []
    for shard, keys in by_shard.items():
        shard_path = _shard_path(folder, index_path, shard)
        if sniff_format(shard_path) != "safetensors":
            raise LinearCNNInputError(f"checkpoint {str(shard_path)!r}: shard is not a safetensors file")
        held = {entry[0]: entry for entry in safetensors_entries(shard_path)}
        missing = [key for key in keys if key not in held]
        if missing:
            raise LinearCNNInputError(
                f"checkpoint {str(index_path)!r}: weight_map puts {missing[0]!r} in shard {shard!r}, which does "
                f"not hold it ({len(missing)} tensor(s) missing)"
            )
        entries.extend(held[key] for key in keys)
    return sorted(entries, key=lambda entry: natural_key(entry[0]))


def huggingface_inventory(folder: Path) -> Inventory:
    """Inventory of a `save_pretrained` folder (see the module docstring)."""
    kind = model_type(folder)
    present = [name for name in HF_WEIGHT_FILES if (folder / name).is_file()]
    source = present[0] if present else ""
    if source == "model.safetensors":
        entries = safetensors_entries(folder / source)
    elif source == "model.safetensors.index.json":
        entries = _sharded_entries(folder, folder / source)
    elif source == "pytorch_model.bin":
        from linearcnn.checkpoints._torch_pickle import torch_pickle_inventory

        kind_of_file = sniff_format(folder / source)
        if kind_of_file not in ("torch-zip", "torch-legacy"):
            raise LinearCNNInputError(
                f"checkpoint {str(folder / source)!r} is {kind_of_file}, not a torch.save file; expected a "
                "PyTorch state dict"
            )
        inv = torch_pickle_inventory(folder / source, unsafe_load=False, zip_format=kind_of_file == "torch-zip")
        return _finish(inv, folder, source, kind)
    else:
        raise LinearCNNInputError(
            f"checkpoint {str(folder)!r}: only a sharded pytorch_model.bin.index.json found; expected "
            "model.safetensors, model.safetensors.index.json or pytorch_model.bin (pass a shard file instead)"
        )
    candidates, others = tensor_candidates(entries, stored_order=False)
    inv = Inventory(path=str(folder), format="huggingface", candidates=candidates, order="sorted name order",
                    other_tensors=others)
    return _finish(inv, folder, source, kind)


def _finish(inv: Inventory, folder: Path, source: str, kind: str | None) -> Inventory:
    """`inv` as the folder's inventory: its path, format, order (naming the file) and stem preference."""
    inv.path = str(folder)
    inv.format = "huggingface"
    inv.order = f"{inv.order}, {source}" + (f", model_type {kind!r}" if kind else "")
    suffix = _STEMS.get(kind or "")
    if suffix is not None:
        hits = [c.name for c in inv.candidates if c.name == suffix or c.name.endswith("." + suffix)]
        if len(hits) == 1:
            inv.preferred_first = (hits[0], f"stem of Hugging Face model_type {kind!r} (config.json)")
    return inv

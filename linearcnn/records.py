"""What every result file carries: the package versions that made it, and strict JSON.

One home for both: checkpoints, patch-statistics files, `--json` output and validation results
all call `versions()` and `to_json()`. JSON is strict (RFC 8259): NaN and +-Inf become `null`,
numpy scalars and arrays become plain numbers and lists.

>>> to_json({"r": float("nan"), "x": [1.5, float("inf")]}, indent=None)
'{"r": null, "x": [1.5, null]}'
"""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np


def _installed_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Package versions recorded in every result file (linearcnn, torch, numpy, python).

    torch's is `torch.__version__` once torch is imported, otherwise its installed distribution's
    (the same string, e.g. "2.13.0+cpu"), so that code that needs no torch does not import it."""
    from linearcnn import __version__

    torch = sys.modules.get("torch")
    return {
        "linearcnn": __version__,
        "torch": str(torch.__version__) if torch is not None else _installed_version("torch"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: dicts with str keys, lists, str, int, float (finite), bool, None.

    Non-finite floats become None; numpy arrays and scalars and torch tensors become lists and
    Python numbers; paths become strings.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return jsonable(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor
        return jsonable(value.detach().cpu().tolist())
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of `value` (see `jsonable`); ends with a newline when indented."""
    text = json.dumps(jsonable(value), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text


__all__ = ["jsonable", "to_json", "versions"]

"""Small helpers shared by the CLI commands: console output and option parsing."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from linearcnn.errors import LinearCNNInputError


def console():
    """A rich console on the current stdout (not cached: tests and pipes replace sys.stdout)."""
    from rich.console import Console

    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)


def parse_float_list(text: str, option: str) -> list[float]:
    """Parse '1,0.5,1e-3' into floats; a clear error names the option and the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise LinearCNNInputError(f"{option} expects a comma-separated list of numbers, got {text!r}")
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise LinearCNNInputError(f"{option}: {item!r} is not a number (expected e.g. '1,0.5,1e-3')") from None
    return values


def parse_int_list(text: str, option: str) -> list[int]:
    values = parse_float_list(text, option)
    if any(v != int(v) for v in values):
        raise LinearCNNInputError(f"{option} expects integers, got {text!r}")
    return [int(v) for v in values]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def to_json(payload: Any) -> str:
    return json.dumps(_jsonable(payload), indent=2) + "\n"


def print_json(payload: Any) -> None:
    sys.stdout.write(to_json(payload))

"""The derivation's results, stored so that a process need not re-run SymPy to evaluate them.

`derive()` takes about 4 s (integrals, expectations, simplification); the expressions the numeric
code lambdifies are a few hundred characters each. `derived.json`, beside this module and shipped
with the package, holds them as `sympy.srepr` text together with a key: the SHA-256 of
`derivation.py` and the SymPy version. `load()` returns them only when the key matches the code
and SymPy in use, so an edited derivation or another SymPy is derived afresh, never read stale.
`make theory` (`python -m linearcnn.theory.cache`) rewrites the file; a test fails when it
differs from a fresh derivation.

The file is read with `eval` in a namespace of SymPy's classes only (no builtins); it is part of
the package, never user input.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import sympy as sp

CACHE_PATH = Path(__file__).with_name("derived.json")
FORMAT = "linearcnn-derived-expressions"


def derivation_key() -> str:
    """SHA-256 of derivation.py's source and the SymPy version: what the stored results depend on."""
    source = Path(__file__).with_name("derivation.py").read_bytes()
    return hashlib.sha256(source + b"\0sympy " + sp.__version__.encode()).hexdigest()


def _namespace() -> dict[str, Any]:
    from sympy.codegen.cfunctions import expm1, log1p
    from sympy.functions.elementary.piecewise import ExprCondPair

    namespace: dict[str, Any] = {"__builtins__": {}}
    namespace.update({name: getattr(sp, name) for name in dir(sp) if not name.startswith("_")})
    namespace.update(expm1=expm1, log1p=log1p, ExprCondPair=ExprCondPair)
    return namespace


def encode(expressions: dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]], x_star: sp.Expr) -> dict[str, Any]:
    """The JSON record of `expressions` (name -> (argument symbols, expression)) and x*."""
    return {
        "format": FORMAT,
        "key": derivation_key(),
        "sympy": sp.__version__,
        "x_star": sp.srepr(x_star),
        "expressions": {
            name: {"args": [sp.srepr(a) for a in args], "expr": sp.srepr(expr)} for name, (args, expr) in expressions.items()
        },
    }


def decode(record: dict[str, Any]) -> tuple[dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]], sp.Expr]:
    """The inverse of `encode`."""
    namespace = _namespace()
    expressions = {
        name: (tuple(eval(a, namespace) for a in entry["args"]), eval(entry["expr"], namespace))  # noqa: S307
        for name, entry in record["expressions"].items()
    }
    return expressions, eval(record["x_star"], namespace)  # noqa: S307


def load(path: Path = CACHE_PATH) -> tuple[dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]], sp.Expr] | None:
    """The stored results when `path` exists and its key matches this code and SymPy; else None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != derivation_key():
        return None
    return decode(record)


def fresh() -> dict[str, Any]:
    """The record of a fresh derivation (runs SymPy)."""
    from linearcnn.theory.numeric import expressions_from_derivation
    from linearcnn.theory.derivation import derive

    return encode(expressions_from_derivation(derive()), derive().results["x_star_value"])


def write(path: Path = CACHE_PATH) -> Path:
    """Derive afresh and store the results at `path` (atomically)."""
    from linearcnn._files import atomic_write_text

    return atomic_write_text(path, json.dumps(fresh(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    print(f"wrote {write()}")

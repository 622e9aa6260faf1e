"""The derivation's results that the numeric code evaluates: picked from `derive()`, stored with the
package so that a process need not re-run SymPy, and read back without `eval`.

`derive()` takes about 4 s (integrals, expectations, simplification); the expressions the numeric
code lambdifies are a few hundred characters each. `derived.json`, beside this module and shipped
with the package, holds them as `sympy.srepr` text (arguments in SymPy's internal order, `order="none"`, so that
the tree read back is the very tree written) together with a key: the SHA-256 of
`derivation.py` and the SymPy version. `load()` returns them only when the key matches the code
and SymPy in use, so an edited derivation or another SymPy is derived afresh, never read stale.
`make theory` (`python -m linearcnn.theory.cache`) rewrites the file; a test fails when it
differs from a fresh derivation.

Nothing in the file is ever run: the srepr text is parsed by `linearcnn.theory._srepr`, which
builds only the SymPy nodes and literals the derivation uses and refuses anything else (a
refused file is reported with a warning and the results are derived afresh).

This module stores and loads expressions; `linearcnn.theory.numeric` lambdifies them (it imports
this module, never the reverse).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import sympy as sp

from linearcnn.errors import LinearCNNInputError
from linearcnn.theory._srepr import parse_srepr
from linearcnn.theory.derivation import Derivation, derive

CACHE_PATH = Path(__file__).with_name("derived.json")
FORMAT = "linearcnn-derived-expressions"

#: name -> (argument symbols, expression): what `lambdify` turns into the numeric functions.
Expressions = dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]]


def derivation_key() -> str:
    """SHA-256 of derivation.py's source and the SymPy version: what the stored results depend on."""
    source = Path(__file__).with_name("derivation.py").read_bytes()
    return hashlib.sha256(source + b"\0sympy " + sp.__version__.encode()).hexdigest()


def expressions_from_derivation(derivation: Derivation) -> Expressions:
    """Pick (and combine) the results of `derive()` that the numeric code evaluates."""
    sym, res = derivation.symbols, derivation.results
    mu, eta, t, tau, r, x = sym["mu"], sym["eta"], sym["t"], sym["tau"], sym["r"], sym["x"]
    growth_symbol = next(s for s in res["raw_profile_in_growth"].free_symbols if s.name == "g")
    stable_growth = res["stable_growth"].subs(x, eta * mu)
    stable_profile = stable_growth / sp.sqrt(mu)
    flow_growth = sp.sqrt(mu) * res["stable_gradient_flow_profile"]  # -expm1(-tau mu)
    return {
        "profile_naive": ((mu, eta, t), res["profile"]),
        "profile_stable": ((mu, eta, t), stable_profile),
        "raw_profile_stable": ((mu, eta, t, r), res["raw_profile_in_growth"].subs(growth_symbol, stable_growth)),
        "flow_profile": ((mu, tau), res["stable_gradient_flow_profile"]),
        "raw_flow_profile": ((mu, tau, r), res["raw_profile_in_growth"].subs(growth_symbol, flow_growth)),
        "growth_factor": ((x, t), res["stable_growth"]),
        "whitening_profile": ((mu,), res["whitening_profile"]),
        "raw_whitening_profile": ((mu, r), res["whitening_raw_profile"]),
    }


def encode(expressions: Expressions, x_star: sp.Expr) -> dict[str, Any]:
    """The JSON record of `expressions` (name -> (argument symbols, expression)) and x*."""
    return {
        "format": FORMAT,
        "key": derivation_key(),
        "sympy": sp.__version__,
        "x_star": sp.srepr(x_star, order="none"),
        "expressions": {
            name: {"args": [sp.srepr(a) for a in args], "expr": sp.srepr(expr, order="none")} for name, (args, expr) in expressions.items()
        },
    }


def decode(record: dict[str, Any]) -> tuple[Expressions, sp.Expr]:
    """The inverse of `encode`, without `eval`; LinearCNNInputError for a record that is not one
    `encode` writes (wrong structure, or text outside what `parse_srepr` accepts)."""
    entries = record.get("expressions")
    if not isinstance(entries, dict):
        raise LinearCNNInputError("stored expressions: 'expressions' is not an object; expected name -> {args, expr}")
    expressions: Expressions = {}
    for name, entry in entries.items():
        where = f"stored expression {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("args"), list) or "expr" not in entry:
            raise LinearCNNInputError(f"{where} is not an object with 'args' (a list) and 'expr'")
        args = tuple(parse_srepr(text, f"{where}, argument {i}") for i, text in enumerate(entry["args"]))
        symbols = tuple(a for a in args if isinstance(a, sp.Symbol))
        if len(symbols) != len(args):
            raise LinearCNNInputError(f"{where}: an argument is not a Symbol; expected Symbol('name', ...)")
        expr = parse_srepr(entry["expr"], where)
        if not isinstance(expr, sp.Expr):
            raise LinearCNNInputError(f"{where} is a {type(expr).__name__}; expected an expression")
        expressions[str(name)] = (symbols, expr)
    x_star = parse_srepr(record.get("x_star"), "stored x_star")
    if not isinstance(x_star, sp.Expr):
        raise LinearCNNInputError(f"stored x_star is a {type(x_star).__name__}; expected a number")
    return expressions, x_star


def load(path: Path = CACHE_PATH) -> tuple[Expressions, sp.Expr] | None:
    """The stored results when `path` exists and its key matches this code and SymPy; else None.

    A file whose key matches but whose text is refused by the parser is reported with a
    RuntimeWarning and treated as absent (None): the caller derives afresh.
    """
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != derivation_key():
        return None
    try:
        return decode(record)
    except LinearCNNInputError as exc:
        warnings.warn(f"ignoring {path}: {exc}; deriving afresh", RuntimeWarning, stacklevel=2)
        return None


@lru_cache(maxsize=1)
def stored_or_derived() -> tuple[Expressions, sp.Expr]:
    """(expressions, x*): the stored results when they match the derivation code, else derived now."""
    stored = load()
    if stored is not None:
        return stored
    derivation = derive()
    return expressions_from_derivation(derivation), derivation.results["x_star_value"]


def fresh() -> dict[str, Any]:
    """The record of a fresh derivation (runs SymPy)."""
    derivation = derive()
    return encode(expressions_from_derivation(derivation), derivation.results["x_star_value"])


def write(path: Path = CACHE_PATH) -> Path:
    """Derive afresh and store the results at `path` (atomically)."""
    from linearcnn._files import atomic_write_text

    return atomic_write_text(path, json.dumps(fresh(), indent=1, sort_keys=True) + "\n")


__all__ = [
    "CACHE_PATH",
    "FORMAT",
    "Expressions",
    "decode",
    "derivation_key",
    "encode",
    "expressions_from_derivation",
    "fresh",
    "load",
    "stored_or_derived",
    "write",
]

if __name__ == "__main__":
    print(f"wrote {write()}")

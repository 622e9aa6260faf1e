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

`make theory` also writes `_lambdified.py`: the source `sympy.lambdify` generates for each stored
expression with numpy (`generated_source`), under the same key, so that numpy evaluation needs
no SymPy at all; that file is package code, generated and reviewed like any other, and a test
fails when it differs from a fresh generation.

This module stores and loads expressions; `linearcnn.theory.numeric` lambdifies them (it imports
this module, never the reverse).
"""

from __future__ import annotations

import ast
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import sympy as sp

from linearcnn.errors import LinearCNNInputError
from linearcnn.theory._key import derivation_key
from linearcnn.theory._srepr import parse_srepr
from linearcnn.theory.derivation import Derivation, derive

CACHE_PATH = Path(__file__).with_name("derived.json")
GENERATED_PATH = Path(__file__).with_name("_lambdified.py")
FORMAT = "linearcnn-derived-expressions"

#: name -> (argument symbols, expression): what `lambdify` turns into the numeric functions.
Expressions = dict[str, tuple[tuple[sp.Symbol, ...], sp.Expr]]




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


def generated_source(expressions: Expressions, x_star: sp.Expr) -> str:
    """The Python module `_lambdified.py`: for each expression, the function that
    `sympy.lambdify(args, expr, modules="numpy")` writes, under the expression's name, with the numpy
    names it uses imported; x* as a float; the derivation key they belong to.

    Raises RuntimeError if lambdify's source uses a name that numpy does not provide (a change
    in SymPy's printer): the file would not run, so it is not written.
    """
    import inspect

    import numpy

    functions, names = [], set()
    for name, (args, expr) in sorted(expressions.items()):
        source = inspect.getsource(sp.lambdify(args, expr, modules="numpy"))
        tree = ast.parse(source)
        definition = tree.body[0]
        assert isinstance(definition, ast.FunctionDef)
        arguments = {a.arg for a in definition.args.args}
        used = {n.id for n in ast.walk(definition) if isinstance(n, ast.Name)} - arguments
        missing = sorted(u for u in used if not hasattr(numpy, u))
        if missing:
            raise RuntimeError(f"lambdify's source for {name} uses {', '.join(missing)}, which numpy does not provide")
        names |= used
        functions.append(source.replace("def _lambdifygenerated(", f"def {name}(", 1).rstrip() + "\n")
    header = (
        '"""The numpy functions of the derivation\'s results, generated by `python -m linearcnn.theory.cache`\n'
        "(`make theory`) from `derived.json`: each is the source `sympy.lambdify(args, expr, modules=\"numpy\")`\n"
        "writes for that expression. Do not edit: a test fails when this file differs from a fresh\n"
        "generation. `linearcnn.theory.numeric` uses them while KEY equals `_key.derivation_key()` (else it\n"
        'lambdifies afresh), so that numpy evaluation never imports SymPy."""\n\n'
        "# ruff: noqa\n"
        f"from numpy import {', '.join(sorted(names))}\n\n"
        f"KEY = {derivation_key()!r}\n"
        f"X_STAR = {float(x_star)!r}\n\n\n"
    )
    registry = "FUNCTIONS = {\n" + "".join(f"    {name!r}: {name},\n" for name in sorted(expressions)) + "}\n"
    return header + "\n\n".join(functions) + "\n\n" + registry


def write(path: Path = CACHE_PATH, generated: Path = GENERATED_PATH) -> Path:
    """Derive afresh and store the results at `path` and their numpy functions at `generated` (atomically)."""
    from linearcnn._files import atomic_write_text

    record = fresh()
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    expressions, x_star = decode(record)
    atomic_write_text(generated, generated_source(expressions, x_star))
    return path


__all__ = [
    "CACHE_PATH",
    "FORMAT",
    "GENERATED_PATH",
    "Expressions",
    "decode",
    "derivation_key",
    "encode",
    "expressions_from_derivation",
    "fresh",
    "generated_source",
    "load",
    "stored_or_derived",
    "write",
]

if __name__ == "__main__":
    print(f"wrote {write()} and {GENERATED_PATH}")

"""The stored derivation results (linearcnn/theory/derived.json) equal a fresh SymPy derivation,
round-trip exactly, and are ignored when they no longer match the derivation code."""

from __future__ import annotations

import json

import numpy as np
import sympy as sp

from linearcnn.theory import cache
from linearcnn.theory.derivation import derive
from linearcnn.theory.numeric import expressions_from_derivation


def test_committed_results_equal_a_fresh_derivation():
    stored = json.loads(cache.CACHE_PATH.read_text())
    assert stored == cache.fresh(), "linearcnn/theory/derived.json is stale: run `make theory`"


def test_round_trip_gives_the_same_expressions_and_numbers():
    expressions = expressions_from_derivation(derive())
    x_star = derive().results["x_star_value"]
    decoded, decoded_x_star = cache.decode(json.loads(json.dumps(cache.encode(expressions, x_star))))
    assert decoded_x_star == x_star
    assert decoded.keys() == expressions.keys()
    rng = np.random.default_rng(0)
    for name, (args, expr) in expressions.items():
        new_args, new_expr = decoded[name]
        assert new_args == args and new_expr == expr, name
        assert all(a.assumptions0 == b.assumptions0 for a, b in zip(new_args, args)), name
        values = rng.uniform(0.1, 0.9, size=(5, len(args)))
        with np.errstate(invalid="ignore"):  # numpy evaluates every Piecewise branch, the unused ones too
            before = np.broadcast_to(np.asarray(sp.lambdify(args, expr, "numpy")(*values.T), dtype=float), (5,))
            after = np.broadcast_to(np.asarray(sp.lambdify(new_args, new_expr, "numpy")(*values.T), dtype=float), (5,))
        assert np.all(np.isfinite(before)), name
        np.testing.assert_array_equal(after, before)


def test_results_for_other_code_or_sympy_are_not_used(tmp_path, monkeypatch):
    path = tmp_path / "derived.json"
    path.write_text(cache.CACHE_PATH.read_text())
    assert cache.load(path) is not None
    monkeypatch.setattr(cache, "derivation_key", lambda: "0" * 64)  # derivation.py edited, or another SymPy
    assert cache.load(path) is None
    path.write_text("not json")
    assert cache.load(path) is None
    assert cache.load(tmp_path / "missing.json") is None


def test_stored_text_is_evaluated_without_builtins(tmp_path):
    record = json.loads(cache.CACHE_PATH.read_text())
    record["x_star"] = "__import__('os').getcwd()"
    try:
        cache.decode(record)
    except NameError:
        pass
    else:
        raise AssertionError("builtins were reachable from the stored text")

"""The stored derivation results (linearcnn/theory/derived.json) equal a fresh SymPy derivation,
round-trip exactly, are ignored when they no longer match the derivation code, and are read by a
parser that runs nothing: text outside its allow-list is refused before anything is built."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from linearcnn.errors import LinearCNNInputError
from linearcnn.theory import cache
from linearcnn.theory._srepr import parse_srepr
from linearcnn.theory.derivation import derive


def test_committed_results_equal_a_fresh_derivation():
    stored = json.loads(cache.CACHE_PATH.read_text())
    assert stored == cache.fresh(), "linearcnn/theory/derived.json is stale: run `make theory`"


def test_generated_numpy_functions_equal_a_fresh_generation():
    expressions, x_star = cache.decode(json.loads(cache.CACHE_PATH.read_text()))
    assert cache.GENERATED_PATH.read_text() == cache.generated_source(expressions, x_star), (
        "linearcnn/theory/_lambdified.py is stale: run `make theory`")


def test_generated_functions_evaluate_as_lambdify_does():
    from linearcnn.theory import _lambdified

    expressions, x_star = cache.stored_or_derived()
    assert _lambdified.X_STAR == float(x_star)
    assert set(_lambdified.FUNCTIONS) == set(expressions)
    rng = np.random.default_rng(1)
    for name, (args, expr) in expressions.items():
        values = rng.uniform(0.05, 1.95, size=(64, len(args)))
        values[:, -1] = np.where(rng.random(64) < 0.5, np.round(values[:, -1] * 10), values[:, -1])  # integer steps too
        with np.errstate(all="ignore"):
            expected = np.asarray(sp.lambdify(args, expr, "numpy")(*values.T), dtype=float)
            got = np.asarray(_lambdified.FUNCTIONS[name](*values.T), dtype=float)
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_other_code_or_sympy_lambdify_afresh(monkeypatch):
    from linearcnn.theory import _lambdified, numeric

    mu = np.linspace(2, 0.01, 9)
    before = numeric.gradient_flow_profile(mu, 2.0)
    numeric.lambdified.cache_clear()
    monkeypatch.setattr(_lambdified, "KEY", "0" * 64)  # derivation.py edited, or another SymPy
    try:
        assert numeric.lambdified("flow_profile", "numpy") is not _lambdified.FUNCTIONS["flow_profile"]
        np.testing.assert_array_equal(numeric.gradient_flow_profile(mu, 2.0), before)
    finally:
        numeric.lambdified.cache_clear()


def test_every_stored_expression_parses_back_equal_to_the_derived_one():
    derived = cache.expressions_from_derivation(derive())
    stored, stored_x_star = cache.decode(json.loads(cache.CACHE_PATH.read_text()))
    assert stored.keys() == derived.keys()
    assert stored_x_star == derive().results["x_star_value"]
    for name, (args, expr) in derived.items():
        new_args, new_expr = stored[name]
        assert new_args == args and new_expr == expr, name  # the same tree, node for node
        assert all(a.assumptions0 == b.assumptions0 for a, b in zip(new_args, args)), name
        assert sp.simplify(new_expr - expr) == 0, name


def test_round_trip_gives_the_same_numbers():
    expressions = cache.expressions_from_derivation(derive())
    x_star = derive().results["x_star_value"]
    decoded, decoded_x_star = cache.decode(json.loads(json.dumps(cache.encode(expressions, x_star))))
    assert decoded_x_star == x_star
    rng = np.random.default_rng(0)
    for name, (args, expr) in expressions.items():
        new_args, new_expr = decoded[name]
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


def test_every_node_the_parser_accepts_round_trips():
    x = sp.Symbol("x", positive=True)
    n = sp.Symbol("n", integer=True, nonnegative=True)
    expr = sp.Piecewise(
        (sp.Mod(n, 2) + sp.Abs(x - 3), sp.Eq(n, 0)),
        (sp.sqrt(x) * sp.exp(-x) * sp.log(x) / sp.pi, sp.Lt(x, 1)),
        (sp.Float("0.125", 30) * x ** sp.Rational(-3, 2) + sp.E + sp.I, sp.Gt(x, 2)),
        (sp.oo, True),
    )
    assert parse_srepr(sp.srepr(expr, order="none")) == expr
    assert parse_srepr("true") is sp.true


# Payloads that do something when evaluated by Python (each would create MARKER); the parser must
# refuse every one with LinearCNNInputError and never run it.
FILE_PAYLOADS = [
    "__import__('pathlib').Path('MARKER').touch()",
    "open('MARKER', 'w')",
    "(lambda: open('MARKER', 'w'))()",
    "Add(open('MARKER', 'w'), Integer(1))",
    "Symbol('x').__class__.__base__.__subclasses__() and open('MARKER', 'w')",
    "[open('MARKER', 'w')][0]",
    "Add(*[open('MARKER', 'w')])",
    "Symbol('x', **{'positive': open('MARKER', 'w')})",
    "Integer(1) if open('MARKER', 'w') else Integer(2)",
    "f\"{open('MARKER', 'w')}\"",
]
# Text that names something outside the allow-list without touching files.
OTHER_REFUSED = [
    "__builtins__",
    "Symbol('x').__class__",
    "sympify('x')",
    "Function('f')(Symbol('x'))",
    "Integer(1) + Integer(2)",
    "Symbol('__class__')",
    "Symbol('x', evaluate=False)",
    "Add(Integer(1), evaluate=True)",
    "Integer(10**400)",
    "Integer(2**64)",
    "Float('1', precision=1000000000)",
    "Rational(1)",
    "Integer('1')",
    "Float('x')",
    "Integer(1); Integer(2)",
    "",
]


@pytest.mark.parametrize("payload", FILE_PAYLOADS)
def test_payloads_are_live_when_evaluated(payload, tmp_path, monkeypatch):
    """Control: plain `eval` of each payload does create the marker file, so the next test means something."""
    monkeypatch.chdir(tmp_path)
    namespace = {name: getattr(sp, name) for name in ("Add", "Integer", "Symbol")}
    try:
        eval(payload, namespace)  # the control: what the old eval-based reader risked
    except Exception:  # only the side effect matters
        pass
    assert (tmp_path / "MARKER").exists(), payload


@pytest.mark.parametrize("payload", FILE_PAYLOADS + OTHER_REFUSED)
def test_crafted_text_is_refused_and_never_run(payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LinearCNNInputError):
        parse_srepr(payload)
    record = json.loads(cache.CACHE_PATH.read_text())
    record["expressions"]["flow_profile"]["expr"] = payload
    with pytest.raises(LinearCNNInputError, match="flow_profile"):
        cache.decode(record)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("field", ["x_star", "expr", "args"])
def test_a_tampered_file_with_the_right_key_is_ignored_with_a_warning(field, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = json.loads(cache.CACHE_PATH.read_text())
    payload = FILE_PAYLOADS[0]
    if field == "x_star":
        record["x_star"] = payload
    elif field == "expr":
        record["expressions"]["growth_factor"]["expr"] = payload
    else:
        record["expressions"]["growth_factor"]["args"][0] = payload
    path = Path(tmp_path / "derived.json")
    path.write_text(json.dumps(record))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(path) is None  # the caller derives afresh
    assert any(issubclass(w.category, RuntimeWarning) and "deriving afresh" in str(w.message) for w in caught)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(expressions=[]),
        lambda r: r["expressions"].update(flow_profile="Symbol('x')"),
        lambda r: r["expressions"]["flow_profile"].update(args="Symbol('x')"),
        lambda r: r["expressions"]["flow_profile"]["args"].append("Integer(1)"),
        lambda r: r["expressions"]["flow_profile"].update(expr=["Integer(1)"]),
        lambda r: r["expressions"]["flow_profile"].update(expr="Equality(Integer(1), Integer(2))"),
        lambda r: r.update(x_star=None),
    ],
)
def test_records_of_the_wrong_shape_are_refused(mutate):
    record = json.loads(cache.CACHE_PATH.read_text())
    mutate(record)
    with pytest.raises(LinearCNNInputError):
        cache.decode(record)

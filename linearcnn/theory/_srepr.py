"""Reading `sympy.srepr` text back without `eval`: a parser that builds only the SymPy nodes the
derivation's results are made of.

The text is parsed by Python's `ast` (which runs nothing) and walked node by node. Accepted:
calls of the classes and functions in `NODES` by bare name, with arguments that are accepted
nodes, the atoms in `ATOMS` (`true`, `oo`, `pi`, ...), and the literals those classes take
(`Symbol('mu', positive=True)`, `Integer(-1)`, `Rational(1, 2)`, `Float('1.25', precision=53)`).
Anything else (an attribute, a subscript, an operator, a lambda, another name, a keyword argument
outside a Symbol's assumptions) raises LinearCNNInputError naming it, before any SymPy object is
built.

>>> parse_srepr("Mul(Integer(2), Symbol('x', positive=True))")
2*x
>>> parse_srepr("__import__('os')")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
linearcnn.errors.LinearCNNInputError: stored expression: call of '__import__' is not allowed; expected one of Abs, Add, ...
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.functions.elementary.piecewise import ExprCondPair

from linearcnn.errors import LinearCNNInputError

#: The SymPy classes and functions a stored expression may call (by bare name, positional arguments).
NODES: dict[str, Callable[..., sp.Basic]] = {
    "Abs": sp.Abs,
    "Add": sp.Add,
    "Equality": sp.Equality,
    "ExprCondPair": ExprCondPair,
    "GreaterThan": sp.GreaterThan,
    "LessThan": sp.LessThan,
    "Mod": sp.Mod,
    "Mul": sp.Mul,
    "Piecewise": sp.Piecewise,
    "Pow": sp.Pow,
    "StrictGreaterThan": sp.StrictGreaterThan,
    "StrictLessThan": sp.StrictLessThan,
    "Unequality": sp.Unequality,
    "exp": sp.exp,
    "expm1": expm1,
    "log": sp.log,
    "log1p": log1p,
    "sqrt": sp.sqrt,
}
#: Bare names that stand for SymPy constants.
ATOMS: dict[str, sp.Basic] = {
    "true": sp.true,
    "false": sp.false,
    "oo": sp.oo,
    "zoo": sp.zoo,
    "nan": sp.nan,
    "pi": sp.pi,
    "E": sp.E,
    "I": sp.I,
}
#: Assumptions a stored Symbol may carry (keyword arguments, True or False).
ASSUMPTIONS = frozenset(
    {"commutative", "complex", "even", "finite", "integer", "negative", "nonnegative", "nonpositive", "nonzero",
     "odd", "positive", "rational", "real", "zero"}
)  # fmt: skip
#: Longest text accepted (the stored expressions are about a thousand characters).
MAX_LENGTH = 100_000
MAX_INTEGER = 2**63
MAX_PRECISION = 4096
#: Nodes whose constructor takes no `evaluate` argument.
_NO_EVALUATE_FLAG = frozenset({"ExprCondPair"})
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_LITERALS = ("Symbol", "Integer", "Rational", "Float")


def parse_srepr(text: object, what: str = "stored expression") -> sp.Basic:
    """The SymPy expression written by `sympy.srepr` as `text`, built without `eval`.

    Raises LinearCNNInputError (message starting with `what`) for text that is not one
    expression made only of the accepted nodes, atoms and literals (see the module docstring).
    """
    if not isinstance(text, str):
        raise LinearCNNInputError(f"{what} is a {type(text).__name__}; expected srepr text")
    if len(text) > MAX_LENGTH:
        raise LinearCNNInputError(f"{what} has {len(text)} characters; expected at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise LinearCNNInputError(f"{what} is not one Python expression; expected srepr text") from None
    try:
        return _build(tree.body, what)
    except RecursionError:
        raise LinearCNNInputError(f"{what} is nested too deeply") from None


def _refuse(node: ast.AST, what: str, detail: str) -> LinearCNNInputError:
    return LinearCNNInputError(f"{what}: {detail} (column {getattr(node, 'col_offset', 0)})")


def _build(node: ast.expr, what: str) -> sp.Basic:
    if isinstance(node, ast.Name):
        if node.id not in ATOMS:
            raise _refuse(node, what, f"name {node.id!r} is not allowed; expected one of {', '.join(sorted(ATOMS))}")
        return ATOMS[node.id]
    if not isinstance(node, ast.Call):
        raise _refuse(node, what, f"{type(node).__name__} is not allowed; expected a call such as Add(...) or Symbol('x')")
    if not isinstance(node.func, ast.Name):
        raise _refuse(node, what, f"call of a {type(node.func).__name__} is not allowed; expected a SymPy class by name")
    name = node.func.id
    if name in _LITERALS:
        return _literal(node, name, what)
    if name not in NODES:
        allowed = ", ".join(sorted(NODES, key=str.lower))
        raise LinearCNNInputError(f"{what}: call of {name!r} is not allowed; expected one of {allowed}, {', '.join(_LITERALS)}")
    if node.keywords:
        raise _refuse(node, what, f"{name}(...) with keyword arguments is not allowed")
    arguments = [_build(argument, what) for argument in node.args]  # checked before anything is built
    if name in _NO_EVALUATE_FLAG:
        return NODES[name](*arguments)
    return NODES[name](*arguments, evaluate=False)


def _literal(node: ast.Call, name: str, what: str) -> sp.Basic:
    """Symbol('x', positive=True), Integer(-1), Rational(1, 2) or Float('0.5', precision=53)."""
    values = [_constant(argument, what) for argument in node.args]
    keywords = {keyword.arg: _constant(keyword.value, what) for keyword in node.keywords}
    if name == "Symbol":
        if len(values) != 1 or not isinstance(values[0], str) or not _SYMBOL_NAME.match(values[0]):
            raise _refuse(node, what, "Symbol needs one name of letters, digits and underscores")
        unknown = [key for key in keywords if key not in ASSUMPTIONS]
        if unknown or not all(isinstance(value, bool) for value in keywords.values()):
            raise _refuse(node, what, f"Symbol assumptions {sorted(map(str, keywords))} are not allowed; expected True/False of "
                                      f"{', '.join(sorted(ASSUMPTIONS))}")
        return sp.Symbol(values[0], **{str(key): bool(value) for key, value in keywords.items()})
    if name in ("Integer", "Rational"):
        count = 1 if name == "Integer" else 2
        if keywords or len(values) != count or not all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INTEGER for v in values
        ):
            raise _refuse(node, what, f"{name} needs {count} integer literal(s) of magnitude at most 2**63")
        return sp.Integer(values[0]) if name == "Integer" else sp.Rational(values[0], values[1])
    precision = keywords.pop("precision", 53)
    if (keywords or len(values) != 1 or not isinstance(values[0], str) or isinstance(precision, bool) or not isinstance(precision, int)
            or not 1 <= precision <= MAX_PRECISION):
        raise _refuse(node, what, f"Float needs a decimal string and an integer precision of 1 to {MAX_PRECISION} bits")
    try:
        return sp.Float(values[0], precision=precision)
    except (ValueError, TypeError):
        raise _refuse(node, what, f"Float of {values[0]!r} is not a number") from None


def _constant(node: ast.expr, what: str) -> object:
    """A literal string, integer or bool (an integer may carry a minus sign)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, int) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
        return node.value
    raise _refuse(node, what, f"{type(node).__name__} is not allowed as a literal; expected a string, integer or True/False")


__all__ = ["ASSUMPTIONS", "ATOMS", "NODES", "parse_srepr"]

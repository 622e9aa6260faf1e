"""The order of convolutions in a TorchScript archive's code, read as text and never run.

The `code/` files of an archive are TorchScript source in Python syntax (one file per class
namespace, `__torch__/linearcnn/models.py` holding `__torch__.linearcnn.models.VGG11`). They are
parsed with `ast.parse` (parsing builds a syntax tree; nothing is compiled or executed) and the
root module's `forward` is followed statement by statement, with calls of submodule methods
(`(stem).forward(x, )`, `(self)._conv_forward(...)`) and of scripted functions inlined. Each value
is tracked abstractly: whether it is derived from `forward`'s inputs, and which stored tensors
(parameters `stem.weight`, frozen constants `CONSTANTS.c0`) it comes from. Every call of a
convolution (`torch.conv2d`, `torch._convolution`, ...; transposed ones excluded) is recorded in
execution order with the tensor its weight comes from and whether its input is derived from the
data: the first such convolution is the network's first layer.

Both branches of an `if` are followed (their results merged) and loop bodies twice, so a value
that may be derived counts as derived. The walk is bounded in steps and call depth; past either,
or on text it cannot parse, `convolution_order` returns None and the caller falls back to
parameter order.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from linearcnn.checkpoints._safe_unpickle import ScriptObject, StoredTensor

#: Calls that apply a convolution (TorchScript's printed names of the aten operators).
_CONV_CALLS = frozenset(
    {
        "torch.conv2d",
        "torch._convolution",
        "torch.convolution",
        "torch._convolution_mode",
        "torch.mkldnn_convolution",
        "torch.cudnn_convolution",
    }
)
_GENERIC_CONV_CALLS = frozenset({"torch._convolution", "torch.convolution"})  # arg 6: transposed
_MAX_STEPS = 500_000  # a scripted ResNet-18 takes about 5,000
_MAX_DEPTH = 48
_MAX_ORIGINS = 8


class _GiveUp(Exception):
    """The code is too large, too deep or not what TorchScript prints."""


@dataclass(frozen=True)
class _Data:
    """A tensor or other value: derived from the input or not, and the stored tensors it comes from."""

    derived: bool = False
    origins: tuple[tuple[str, StoredTensor], ...] = ()


@dataclass(frozen=True)
class _Module:
    obj: ScriptObject
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Function:
    qualname: str


@dataclass(frozen=True)
class _Tuple:
    items: tuple[Any, ...]


_NOTHING = _Data()


def _join(values: Iterable[Any]) -> _Data:
    """One `_Data` for values combined by an operation: derived if any is; their origins, in order."""
    derived = False
    origins: list[tuple[str, StoredTensor]] = []
    for value in values:
        if isinstance(value, _Tuple):
            value = _join(value.items)
        if not isinstance(value, _Data):
            continue
        derived = derived or value.derived
        for origin in value.origins:
            if origin not in origins and len(origins) < _MAX_ORIGINS:
                origins.append(origin)
    return _Data(derived, tuple(origins))


def _dotted(node: ast.expr) -> str | None:
    """`torch.nn.functional.relu` for an attribute chain on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *parts])
    return None


class CodeIndex:
    """Classes and functions of an archive's code files, parsed on first use."""

    def __init__(self, code: Mapping[str, str]) -> None:
        self._code = code
        self._parsed: set[str] = set()
        self.classes: dict[str, dict[str, ast.FunctionDef]] = {}
        self.class_defs: dict[str, ast.ClassDef] = {}
        self.functions: dict[str, ast.FunctionDef] = {}

    def _parse(self, module: str) -> None:
        if module in self._parsed or module not in self._code:
            return
        self._parsed.add(module)
        try:
            tree = ast.parse(self._code[module])
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise _GiveUp(f"cannot parse {module}: {type(exc).__name__}") from None
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                qualname = f"{module}.{node.name}"
                self.class_defs[qualname] = node
                self.classes[qualname] = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
            elif isinstance(node, ast.FunctionDef):
                self.functions[f"{module}.{node.name}"] = node

    def method(self, qualname: str, name: str) -> ast.FunctionDef | None:
        self._parse(qualname.rpartition(".")[0])
        return self.classes.get(qualname, {}).get(name)

    def function(self, qualname: str) -> ast.FunctionDef | None:
        self._parse(qualname.rpartition(".")[0])
        return self.functions.get(qualname)

    def declared_tensors(self, qualname: str) -> tuple[list[str], list[str]] | None:
        """(`__parameters__`, `__buffers__`) of a module class, or None when its code is unknown."""
        try:
            self._parse(qualname.rpartition(".")[0])
        except _GiveUp:
            return None
        node = self.class_defs.get(qualname)
        if node is None:
            return None
        declared: dict[str, list[str]] = {"__parameters__": [], "__buffers__": []}
        for statement in node.body:
            if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.List):
                for target in statement.targets:
                    if isinstance(target, ast.Name) and target.id in declared:
                        declared[target.id] = [
                            e.value for e in statement.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                        ]
        return declared["__parameters__"], declared["__buffers__"]


@dataclass(frozen=True)
class ConvUse:
    """One convolution call: the stored tensor its weight comes from, and whether its input is
    derived from the network's input."""

    key: str  # "stem.weight", or "CONSTANTS.c0" for a frozen module's constant
    weight: StoredTensor
    from_input: bool


class _Walker:
    """Follows the code abstractly (module docstring); `found` collects convolution calls."""

    def __init__(self, index: CodeIndex, constants: tuple[Any, ...]) -> None:
        self.index = index
        self.constants = constants
        self.steps = 0
        self.depth = 0
        self.found: list[ConvUse] = []

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _GiveUp("too many steps")

    # ---------------------------------------------------------------- expressions

    def _attribute(self, base: Any, name: str) -> Any:
        if isinstance(base, _Module):
            state = base.obj.state if isinstance(base.obj.state, dict) else {}
            value = state.get(name)
            if isinstance(value, ScriptObject):
                return _Module(value, (*base.path, name))
            if isinstance(value, StoredTensor):
                return _Data(False, ((".".join((*base.path, name)), value),))
            return _NOTHING
        return _join([base])

    def evaluate(self, node: ast.expr | None, env: dict[str, Any]) -> Any:
        self._tick()
        if node is None or isinstance(node, ast.Constant):
            return _NOTHING
        if isinstance(node, ast.Name):
            return env.get(node.id, _NOTHING)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is not None and dotted.split(".")[0] not in env:
                return self._global(dotted)
            return self._attribute(self.evaluate(node.value, env), node.attr)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.Tuple):
            return _Tuple(tuple(self.evaluate(e, env) for e in node.elts))
        if isinstance(node, ast.Subscript):
            base = self.evaluate(node.value, env)
            index = node.slice
            if isinstance(base, _Tuple) and isinstance(index, ast.Constant) and type(index.value) is int:
                if -len(base.items) <= index.value < len(base.items):
                    return base.items[index.value]
            return _join([base, self.evaluate(index, env)])
        return _join(self.evaluate(child, env) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))

    def _global(self, dotted: str) -> Any:
        if dotted.startswith("CONSTANTS.c") and dotted[len("CONSTANTS.c") :].isdigit():
            position = int(dotted[len("CONSTANTS.c") :])
            if position < len(self.constants) and isinstance(self.constants[position], StoredTensor):
                return _Data(False, ((dotted, self.constants[position]),))
            return _NOTHING
        if dotted.startswith("__torch__.") and self.index.function(dotted) is not None:
            return _Function(dotted)
        return _NOTHING

    def _call(self, node: ast.Call, env: dict[str, Any]) -> Any:
        func = node.func
        name = _dotted(func)
        if name == "getattr" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
            return self._attribute(self.evaluate(node.args[0], env), str(node.args[1].value))
        if isinstance(func, ast.Attribute) and not (name is not None and name.split(".")[0] not in env):
            owner = self.evaluate(func.value, env)
            if isinstance(owner, _Module):
                method = self.index.method(owner.obj.qualname, func.attr)
                args = [self.evaluate(a, env) for a in node.args]
                kwargs = {k.arg: self.evaluate(k.value, env) for k in node.keywords if k.arg}
                return self.inline(method, args, kwargs, owner) if method is not None else _join(args)
            args = [owner, *(self.evaluate(a, env) for a in node.args)]
            return _join(args + [self.evaluate(k.value, env) for k in node.keywords])
        callee = self.evaluate(func, env) if name is None or name.split(".")[0] in env else self._global(name)
        args = [self.evaluate(a, env) for a in node.args]
        kwargs = {k.arg: self.evaluate(k.value, env) for k in node.keywords if k.arg}
        if isinstance(callee, _Function):
            function = self.index.function(callee.qualname)
            return self.inline(function, args, kwargs, None) if function is not None else _join(args)
        if name in _CONV_CALLS:
            self._convolution(node, name, args, kwargs)
        return _join([*args, *kwargs.values()])

    def _convolution(self, node: ast.Call, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        if name in _GENERIC_CONV_CALLS and len(node.args) > 6:
            flag = node.args[6]
            if isinstance(flag, ast.Constant) and flag.value is True:
                return  # a transposed convolution is not a classifier's first layer
        data = args[0] if args else kwargs.get("input", _NOTHING)
        weight = args[1] if len(args) > 1 else kwargs.get("weight", _NOTHING)
        for key, tensor in _join([weight]).origins:
            if len(tensor.shape) == 4:
                self.found.append(ConvUse(key, tensor, _join([data]).derived))
                return

    # ---------------------------------------------------------------- statements

    def inline(self, function: ast.FunctionDef, args: list[Any], kwargs: dict[str, Any], owner: _Module | None) -> Any:
        """The (abstract) result of calling `function`, its convolutions recorded."""
        if self.depth >= _MAX_DEPTH:
            raise _GiveUp("calls nested too deeply")
        self.depth += 1
        params = [a.arg for a in function.args.args]
        env: dict[str, Any] = {}
        if owner is not None and params:
            env[params[0]] = owner
            params = params[1:]
        for position, param in enumerate(params):
            env[param] = args[position] if position < len(args) else kwargs.get(param, _NOTHING)
        returns: list[Any] = []
        self.block(function.body, env, returns)
        self.depth -= 1
        if len(returns) == 1:
            return returns[0]
        return _join(returns)

    def _assign(self, target: ast.expr, value: Any, env: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = value.items if isinstance(value, _Tuple) and len(value.items) == len(target.elts) else None
            for position, element in enumerate(target.elts):
                self._assign(element, items[position] if items else _join([value]), env)
        # attribute and subscript targets (`self.x = ...`) change no local value we follow

    def block(self, statements: list[ast.stmt], env: dict[str, Any], returns: list[Any]) -> None:
        for statement in statements:
            self.statement(statement, env, returns)

    def statement(self, node: ast.stmt, env: dict[str, Any], returns: list[Any]) -> None:
        self._tick()
        if isinstance(node, ast.Assign):
            value = self.evaluate(node.value, env)
            for target in node.targets:
                self._assign(target, value, env)
        elif isinstance(node, ast.AnnAssign):
            self._assign(node.target, self.evaluate(node.value, env), env)
        elif isinstance(node, ast.AugAssign):
            self._assign(node.target, _join([self.evaluate(node.target, env), self.evaluate(node.value, env)]), env)
        elif isinstance(node, ast.Return):
            returns.append(self.evaluate(node.value, env))
        elif isinstance(node, ast.Expr):
            self.evaluate(node.value, env)
        elif isinstance(node, ast.If):
            condition = self.evaluate(node.test, env)
            branches = [dict(env), dict(env)]
            self.block(node.body, branches[0], returns)
            self.block(node.orelse, branches[1], returns)
            self._merge(env, branches, _join([condition]).derived)
        elif isinstance(node, (ast.For, ast.While)):
            if isinstance(node, ast.For):
                self._assign(node.target, _join([self.evaluate(node.iter, env)]), env)
            condition = _join([self.evaluate(node.test, env)]) if isinstance(node, ast.While) else _NOTHING
            for _ in range(2):  # twice: values carried around the loop reach its start
                branches = [dict(env), dict(env)]
                self.block(node.body, branches[0], returns)
                self._merge(env, branches, condition.derived)
            self.block(node.orelse, env, returns)
        else:  # assert, raise, pass, ...: evaluate what they contain
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.evaluate(child, env)

    @staticmethod
    def _merge(env: dict[str, Any], branches: list[dict[str, Any]], condition_derived: bool) -> None:
        for name in set(branches[0]) | set(branches[1]):
            first, second = branches[0].get(name, _NOTHING), branches[1].get(name, _NOTHING)
            if first is second or first == second:
                merged = first
            elif isinstance(first, _Module) or isinstance(second, _Module):
                merged = first if isinstance(first, _Module) else second
            else:
                merged = _join([first, second])
            if condition_derived and env.get(name) is not merged:
                merged = _join([merged, _Data(True)])
            env[name] = merged


def convolution_order(code: Mapping[str, str], root: ScriptObject, constants: tuple[Any, ...]) -> list[ConvUse] | None:
    """Convolution calls of `root.forward` in execution order (module docstring), or None when
    the code cannot be followed (missing, unparsable, too large, too deeply nested)."""
    index = CodeIndex(code)
    walker = _Walker(index, constants)
    try:
        forward = index.method(root.qualname, "forward")
        if forward is None:
            return None
        inputs = [_Data(True) for _ in forward.args.args[1:]]
        walker.inline(forward, inputs, {}, _Module(root, ()))
    except (_GiveUp, RecursionError):
        return None
    return walker.found


__all__ = ["CodeIndex", "ConvUse", "convolution_order"]

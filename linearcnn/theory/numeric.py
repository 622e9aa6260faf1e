"""The numeric energy-profile formulas: the SymPy derivation, lambdified (numpy and torch).

Nothing here restates the formula: every function evaluates an expression produced by
`linearcnn.theory.derivation.derive()`, turned into code by `sympy.lambdify` once per process.
The expressions come from `linearcnn.theory.cache.stored_or_derived()` (the derivation's results
stored with the package, used only while they match derivation.py and the SymPy in use, else
derived afresh); this module only lambdifies and evaluates them. For numpy, the lambdified
source of every stored expression is generated once with the stored results
(`linearcnn.theory._lambdified`, `make theory`) and used while its key matches, so that numpy
evaluation imports neither SymPy nor torch; otherwise (an edited derivation, another SymPy) the
expressions are lambdified in the process, as for torch.

Conventions shared by every function:

* `eigenvalues` are the eigenvalues of the patch covariance: variances (PAPER's lambda_i^2), a
  1-D array of length d, all positive.
* `lr`, `steps`, `tau`, `init_ratio` broadcast against each other; the result has shape
  `broadcast(lr, steps, ...).shape + (d,)`, so a vector of 1,000 step counts gives a (1000, d)
  array of profiles in one call.
* The backend follows the inputs: any `torch.Tensor` argument gives a torch result (on the
  eigenvalues' device and dtype), otherwise numpy float64. Evaluating in numpy never imports
  torch (nor SymPy's torch printer): a process that has not imported torch holds no tensor.
* Profiles are unnormalised (the constant of Thm 4.2 is dropped); Pearson correlation, the
  similarity of PAPER Sec. 1, ignores it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from linearcnn.errors import LinearCNNInputError
from linearcnn.theory._key import derivation_key

if TYPE_CHECKING:  # pragma: no cover - typing only
    import sympy as sp
    import torch
    from numpy.typing import ArrayLike, NDArray

    from linearcnn.theory.cache import Expressions

    #: An input: a number, a numpy array (or anything numpy reads as one) or a torch tensor.
    Values = ArrayLike | torch.Tensor
    #: A result: numpy float64, or torch when an input is a tensor (see the module docstring).
    Profile = NDArray[np.float64] | torch.Tensor


class FormulaInputError(LinearCNNInputError):
    """Invalid eigenvalues, learning rate or steps for the closed-form profile."""


class DivergentLearningRateError(FormulaInputError):
    """lr * max(eigenvalue) >= 2: gradient descent diverges (derivation step 'divergence')."""


@cache
def _stable_torch_printer() -> type:
    """SymPy's TorchPrinter plus the C99 functions that SymPy's stable rewriting introduces.

    Built on first use: `sympy.printing.pytorch` imports torch (about a second), which numpy
    evaluation never needs."""
    from sympy.printing.pytorch import TorchPrinter

    class _StableTorchPrinter(TorchPrinter):
        def _print_expm1(self, expr: sp.Expr) -> str:
            return f"{self._module_format('torch.expm1')}({self._print(expr.args[0])})"

        def _print_log1p(self, expr: sp.Expr) -> str:
            return f"{self._module_format('torch.log1p')}({self._print(expr.args[0])})"

    return _StableTorchPrinter


def _stored() -> tuple[Expressions, sp.Expr]:
    """(expressions, x*) from `linearcnn.theory.cache` (imported on first use, so that
    `python -m linearcnn.theory.cache` does not find itself imported by the package first)."""
    from linearcnn.theory.cache import stored_or_derived

    return stored_or_derived()


def _expressions() -> Expressions:
    """The derivation's results that the numeric code evaluates, with their argument symbols."""
    return _stored()[0]


def _generated() -> Any:
    """The generated numpy functions (`linearcnn.theory._lambdified`) when they belong to this
    derivation and SymPy; None otherwise."""
    from linearcnn.theory import _lambdified

    return _lambdified if _lambdified.KEY == derivation_key() else None


@cache
def lambdified(name: str, backend: str) -> Callable[..., Any]:
    """The lambdified function `name` for `backend` ('numpy' or 'torch'), compiled once (numpy: the
    generated one while it belongs to this derivation)."""
    if backend == "numpy":
        generated = _generated()
        if generated is not None and name in generated.FUNCTIONS:
            return generated.FUNCTIONS[name]
    import sympy as sp

    if backend == "numpy":
        args, expr = _expressions()[name]
        return sp.lambdify(args, expr, modules="numpy")
    args, expr = _expressions()[name]
    if backend == "torch":
        import torch

        return sp.lambdify(args, expr, modules=[{"torch": torch}], printer=_stable_torch_printer())
    raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")


def x_star() -> float:
    """x* = tau * mu at the maximum of the gradient-flow profile (root of 2x e^-x = 1 - e^-x)."""
    generated = _generated()
    return float(generated.X_STAR) if generated is not None else float(_stored()[1])


# --------------------------------------------------------------------------------------------
# input handling


def _is_torch(*values: Any) -> bool:
    """Whether any of `values` is a torch tensor. A process that has not imported torch holds no
    tensor, so this never imports it (numpy callers stay free of torch's import time)."""
    torch = sys.modules.get("torch")
    return torch is not None and any(isinstance(v, torch.Tensor) for v in values)


def _check_eigenvalues(eigenvalues: Any) -> np.ndarray:
    values = np.asarray(eigenvalues.detach().cpu() if _is_torch(eigenvalues) else eigenvalues, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise FormulaInputError(f"eigenvalues must be a non-empty 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise FormulaInputError("eigenvalues must be finite; found NaN or Inf")
    if np.any(values <= 0):
        i = int(np.argmin(values))
        raise FormulaInputError(
            f"eigenvalues must be positive (variances of the patch PCA); found {values[i]:g} at index {i}"
        )
    return values


def _check_param(value: Any, name: str, *, positive: bool) -> np.ndarray:
    parameter = name if name.isidentifier() else None  # "lr * eigenvalue" is not one parameter
    arr = np.asarray(value.detach().cpu() if _is_torch(value) else value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise FormulaInputError(f"{name} must be finite; found NaN or Inf", parameter=parameter)
    if positive and np.any(arr <= 0):
        raise FormulaInputError(f"{name} must be > 0; found {arr.min():g}", parameter=parameter)
    if not positive and np.any(arr < 0):
        raise FormulaInputError(f"{name} must be >= 0; found {arr.min():g}", parameter=parameter)
    return arr


def check_stable_lr(eigenvalues: Values, lr: Values) -> None:
    """Raise `DivergentLearningRateError` unless lr * max(eigenvalue) < 2 (stable region (0, 2))."""
    mu_max = float(_check_eigenvalues(eigenvalues).max())
    lr_max = float(_check_param(lr, "lr", positive=True).max())
    if lr_max * mu_max >= 2:
        raise DivergentLearningRateError(
            f"lr={lr_max:g} diverges: lr * max eigenvalue = {lr_max * mu_max:g} >= 2 "
            f"(max eigenvalue {mu_max:g}); use lr < {2 / mu_max:g}",
            parameter="lr",
        )


def evaluate_unchecked(name: str, eigenvalues: Values, params: list[Values]) -> Any:
    """Evaluate the lambdified expression `name` with eigenvalues on the last axis and `params`
    broadcast in front, without validating the inputs.

    For inner loops (the fit) that validated their inputs once with the public functions.
    Names: profile_stable, profile_naive, raw_profile_stable, flow_profile, raw_flow_profile,
    whitening_profile, raw_whitening_profile.
    """
    if _is_torch(eigenvalues, *params):
        import torch

        mu = eigenvalues if isinstance(eigenvalues, torch.Tensor) else torch.as_tensor(eigenvalues, dtype=torch.float64)
        tensors = [torch.as_tensor(p, dtype=mu.dtype, device=mu.device) for p in params]
        shape = torch.broadcast_shapes(*(p.shape for p in tensors)) if tensors else torch.Size()
        columns = [p.expand(shape).unsqueeze(-1) for p in tensors]  # (*P, 1)
        out = lambdified(name, "torch")(mu, *columns)  # (*P, d)
        return torch.as_tensor(out, dtype=mu.dtype, device=mu.device).expand(*shape, mu.shape[-1])
    mu_np = np.asarray(eigenvalues, dtype=np.float64)
    arrays = [np.asarray(p, dtype=np.float64) for p in params]
    shape_np = np.broadcast_shapes(*(p.shape for p in arrays)) if arrays else ()
    columns_np = [np.broadcast_to(p, shape_np)[..., None] for p in arrays]  # (*P, 1)
    # The piecewise stable form evaluates every branch (numpy.select); the unused branch may
    # produce NaN for out-of-range arguments, which select then discards.
    with np.errstate(all="ignore"):
        out_np = lambdified(name, "numpy")(mu_np, *columns_np)  # (*P, d)
    return np.broadcast_to(np.asarray(out_np, dtype=np.float64), (*shape_np, mu_np.shape[-1])).copy()


def evaluate_rows(name: str, eigenvalues: NDArray[np.float64], params: list[Any]) -> NDArray[np.float64]:
    """The batched numpy entry point of the search loops: `evaluate_unchecked` for numpy only, with
    every parameter a scalar or a 1-D array of one length n, giving the (n, d) profiles of the
    lambdified expression `name` in one broadcast (row k: the parameters' k-th values).

    No validation, no torch dispatch, no copies: the caller validated its inputs once with the
    public functions (the fit evaluates thousands of rows of one spectrum this way)."""
    columns = [np.asarray(p, dtype=np.float64)[..., None] for p in params]  # (n, 1) or (1,)
    with np.errstate(all="ignore"):  # the piecewise stable form evaluates every branch; see evaluate_unchecked
        out = lambdified(name, "numpy")(eigenvalues, *columns)
    shape = np.broadcast_shapes(*(c.shape[:-1] for c in columns), ()) + eigenvalues.shape
    return out if isinstance(out, np.ndarray) and out.shape == shape else np.broadcast_to(out, shape).astype(np.float64)


def _check_steps(eigenvalues: np.ndarray, lr: np.ndarray, steps: Any) -> np.ndarray:
    t = _check_param(steps, "steps", positive=False)
    oscillating = np.broadcast_to(lr, np.broadcast_shapes(lr.shape, t.shape))[..., None] * eigenvalues > 1
    if np.any(oscillating & (np.floor(t) != t)[..., None]):
        raise FormulaInputError(
            "steps must be integers where lr * eigenvalue > 1 (the factor (1 - lr*eigenvalue)^steps "
            "has a negative base there)",
            parameter="steps",
        )
    return t


# --------------------------------------------------------------------------------------------
# public formulas


@overload
def formula_profile(eigenvalues: torch.Tensor, lr: Values, steps: Values, *, stable: bool = ...) -> torch.Tensor: ...
@overload
def formula_profile(eigenvalues: ArrayLike, lr: ArrayLike, steps: ArrayLike, *, stable: bool = ...) -> NDArray[np.float64]: ...
def formula_profile(eigenvalues: Values, lr: Values, steps: Values, *, stable: bool = True) -> Profile:
    """Energy profile of a linear CNN after `steps` gradient steps (Thm 4.2), unnormalised.

        e_i = sqrt(mu_i) * (1 - (1 - lr * mu_i)^steps) / mu_i

    Args:
        eigenvalues: patch-covariance eigenvalues mu_i (variances), shape (d,), positive.
        lr: learning rate (constants from K and the number of locations absorbed), > 0,
            with lr * max(mu) < 2.
        steps: number of gradient steps, >= 0 (integers where lr * mu > 1).
        stable: evaluate the expm1/log1p form that SymPy's rewriting produced (default; accurate
            to ~1e-15 relative for lr*mu down to 1e-15 and steps up to 1e15). False evaluates the
            lambdified textbook form, which loses precision when lr * mu * steps is small.

    Returns:
        Array of shape broadcast(lr, steps).shape + (d,); torch if any input is a tensor.
    """
    mu = _check_eigenvalues(eigenvalues)
    lr_arr = _check_param(lr, "lr", positive=True)
    check_stable_lr(mu, lr_arr)
    _check_steps(mu, lr_arr, steps)
    return evaluate_unchecked("profile_stable" if stable else "profile_naive", eigenvalues, [lr, steps])


@overload
def raw_formula_profile(eigenvalues: torch.Tensor, lr: Values, steps: Values, init_ratio: Values) -> torch.Tensor: ...
@overload
def raw_formula_profile(eigenvalues: ArrayLike, lr: ArrayLike, steps: ArrayLike, init_ratio: ArrayLike) -> NDArray[np.float64]: ...
def raw_formula_profile(eigenvalues: Values, lr: Values, steps: Values, init_ratio: Values) -> Profile:
    """Expected energy profile of the *raw* (not init-subtracted) weights, many filters.

        e_i = sqrt( g_i^2 / mu_i + r^2 ),  g_i = 1 - (1 - lr mu_i)^steps,  r = sigma / s

    `init_ratio` r is the initial filter standard deviation over the scale of the label
    correlation (derivation step 'init_term'); r = 0 gives `formula_profile`.
    """
    mu = _check_eigenvalues(eigenvalues)
    lr_arr = _check_param(lr, "lr", positive=True)
    check_stable_lr(mu, lr_arr)
    _check_steps(mu, lr_arr, steps)
    _check_param(init_ratio, "init_ratio", positive=False)
    return evaluate_unchecked("raw_profile_stable", eigenvalues, [lr, steps, init_ratio])


@overload
def gradient_flow_profile(eigenvalues: torch.Tensor, tau: Values) -> torch.Tensor: ...
@overload
def gradient_flow_profile(eigenvalues: ArrayLike, tau: ArrayLike) -> NDArray[np.float64]: ...
def gradient_flow_profile(eigenvalues: Values, tau: Values) -> Profile:
    """Gradient-flow profile (lr -> 0 with tau = lr * steps fixed): (1 - exp(-tau mu)) / sqrt(mu).

    The one-parameter family used to fit real networks; evaluated as -expm1(-tau mu)/sqrt(mu).
    """
    _check_eigenvalues(eigenvalues)
    _check_param(tau, "tau", positive=False)
    return evaluate_unchecked("flow_profile", eigenvalues, [tau])


@overload
def raw_gradient_flow_profile(eigenvalues: torch.Tensor, tau: Values, init_ratio: Values) -> torch.Tensor: ...
@overload
def raw_gradient_flow_profile(eigenvalues: ArrayLike, tau: ArrayLike, init_ratio: ArrayLike) -> NDArray[np.float64]: ...
def raw_gradient_flow_profile(eigenvalues: Values, tau: Values, init_ratio: Values) -> Profile:
    """Gradient-flow profile of raw weights: sqrt((1 - exp(-tau mu))^2 / mu + r^2)."""
    _check_eigenvalues(eigenvalues)
    _check_param(tau, "tau", positive=False)
    _check_param(init_ratio, "init_ratio", positive=False)
    return evaluate_unchecked("raw_flow_profile", eigenvalues, [tau, init_ratio])


@overload
def whitening_profile(eigenvalues: torch.Tensor) -> torch.Tensor: ...
@overload
def whitening_profile(eigenvalues: ArrayLike) -> NDArray[np.float64]: ...
def whitening_profile(eigenvalues: Values) -> Profile:
    """The steps -> infinity limit (Thm 4.3): 1 / sqrt(mu), a whitening filter bank."""
    _check_eigenvalues(eigenvalues)
    return evaluate_unchecked("whitening_profile", eigenvalues, [])


@overload
def growth_factor(x: torch.Tensor, steps: Values) -> torch.Tensor: ...
@overload
def growth_factor(x: ArrayLike, steps: ArrayLike) -> NDArray[np.float64]: ...
def growth_factor(x: Values, steps: Values) -> Profile:
    """g = 1 - (1 - x)^steps for x = lr * eigenvalue in [0, 2), the stable lambdified form.

    Elementwise with broadcasting (numpy, or torch if an input is a tensor); g(0, t) = 0.
    The exact linear dynamics (`linearcnn.dynamics`) use it for every eigen-direction of A.
    """
    xs = _check_param(x, "lr * eigenvalue", positive=False)
    if np.any(xs >= 2):
        raise DivergentLearningRateError(f"lr * eigenvalue = {xs.max():g} >= 2: gradient descent diverges")
    t = _check_param(steps, "steps", positive=False)
    if np.any((np.broadcast_to(xs, np.broadcast_shapes(xs.shape, t.shape)) > 1) & (np.floor(t) != t)):
        raise FormulaInputError("steps must be integers where lr * eigenvalue > 1", parameter="steps")
    if _is_torch(x, steps):
        import torch

        ref = x if isinstance(x, torch.Tensor) else steps
        assert isinstance(ref, torch.Tensor)  # _is_torch: one of the two is
        xt = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        tt = torch.as_tensor(steps, dtype=ref.dtype, device=ref.device)
        return torch.as_tensor(lambdified("growth_factor", "torch")(xt, tt), dtype=ref.dtype, device=ref.device)
    with np.errstate(all="ignore"):
        out = lambdified("growth_factor", "numpy")(np.asarray(x, dtype=np.float64), np.asarray(steps, dtype=np.float64))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), np.broadcast_shapes(np.shape(x), np.shape(steps))).copy()


def max_stable_lr(eigenvalues: Values) -> float:
    """The supremum of stable learning rates, 2 / max(mu) (derivation step 'divergence')."""
    return float(2.0 / _check_eigenvalues(eigenvalues).max())

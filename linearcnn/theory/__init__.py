"""The theory: SymPy derivation of the linear-CNN energy profile and its lambdified numerics.

* `derive()` runs the derivation once (cached) and returns its steps and results.
* `render(format)` writes it as text, LaTeX or Markdown (the documents in `theory/`).
* `formula_profile`, `raw_formula_profile`, `gradient_flow_profile`, `raw_gradient_flow_profile`
  and `whitening_profile` evaluate the derived expressions (numpy or torch).

Modules: `derivation` (SymPy, run once), `cache` (the results the numeric code needs, stored in
`derived.json` and read back by the allow-list parser `_srepr`, never `eval`), `numeric`
(lambdified from `cache`; imports it, never the reverse), `document` (text, Markdown, LaTeX).
"""

from typing import TYPE_CHECKING, Any

from linearcnn.theory.numeric import (
    DivergentLearningRateError,
    FormulaInputError,
    check_stable_lr,
    formula_profile,
    gradient_flow_profile,
    growth_factor,
    max_stable_lr,
    raw_formula_profile,
    raw_gradient_flow_profile,
    whitening_profile,
    x_star,
)

__all__ = [
    "Derivation",
    "DivergentLearningRateError",
    "FormulaInputError",
    "Step",
    "check_stable_lr",
    "derive",
    "formula_profile",
    "gradient_flow_profile",
    "growth_factor",
    "max_stable_lr",
    "raw_formula_profile",
    "raw_gradient_flow_profile",
    "whitening_profile",
    "x_star",
]


if TYPE_CHECKING:  # pragma: no cover - typing only
    from linearcnn.theory.derivation import Derivation, Step, derive


def __getattr__(name: str) -> Any:
    """`Derivation`, `Step` and `derive` on first use: the derivation imports SymPy, which evaluating
    the formulas does not need (`linearcnn.theory.numeric`)."""
    if name in ("Derivation", "Step", "derive"):
        from linearcnn.theory import derivation

        return getattr(derivation, name)
    raise AttributeError(f"module 'linearcnn.theory' has no attribute {name!r}")

"""linearcnn: what does the first layer of a CNN learn, and why?

The public API (thin facade; the code lives in the submodules named in the README):

* theory: `derive`, `formula_profile`, `raw_formula_profile`, `gradient_flow_profile`,
  `raw_gradient_flow_profile`, `whitening_profile`
* measuring: `load_dataset`, `has_test_split`, `patch_stats`, `energy_profile`,
  `load_first_layer`, `fit_formula`
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from linearcnn.errors import LinearCNNInputError

# Everything loads on first use, so `import linearcnn` (and the CLI's --help) stays quick.
_LAZY = {
    "derive": "linearcnn.theory",
    "formula_profile": "linearcnn.theory",
    "raw_formula_profile": "linearcnn.theory",
    "gradient_flow_profile": "linearcnn.theory",
    "raw_gradient_flow_profile": "linearcnn.theory",
    "whitening_profile": "linearcnn.theory",
    "load_dataset": "linearcnn.data",
    "has_test_split": "linearcnn.data",
    "ImageDataset": "linearcnn.data",
    "patch_stats": "linearcnn.patches",
    "PatchStats": "linearcnn.patches",
    "dataset_patch_stats": "linearcnn.patches",
    "energy_profile": "linearcnn.energy",
    "profile_similarity": "linearcnn.energy",
    "whitening_indicators": "linearcnn.energy",
    "load_first_layer": "linearcnn.checkpoints",
    "FirstLayer": "linearcnn.checkpoints",
    "fit_formula": "linearcnn.fit",
    "FitResult": "linearcnn.fit",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'linearcnn' has no attribute {name!r}")


__all__ = ["LinearCNNInputError", *_LAZY]

"""linearcnn: what does the first layer of a CNN learn, and why?

The public API, a thin facade over the rooms named in the README's module map:

* theory: `derive`, `formula_profile`, `raw_formula_profile`, `gradient_flow_profile`,
  `raw_gradient_flow_profile`, `whitening_profile`
* data and patches: `load_dataset`, `has_test_split`, `ImageDataset`, `patch_stats`,
  `dataset_patch_stats`, `PatchStats`
* measuring: `measure` (one call: a checkpoint or a model in memory -> `MeasureResult`),
  `load_first_layer`, `FirstLayer`, `energy_profile`, `profile_similarity`,
  `whitening_indicators`, `fit_formula`, `fit_filters`, `FitResult`
* training and dynamics: `build_model`, `TrainConfig`, `train_seeds`, `simulate` (one run:
  `linearcnn.train.train`; the name `linearcnn.train` is the training package)

Names load on first use, so `import linearcnn` (and the CLI's `--help`) stays quick; `dir()`,
tab completion and static type checkers still see all of them.

>>> import numpy as np, linearcnn
>>> linearcnn.whitening_profile(np.array([4.0, 1.0])).tolist()
[0.5, 1.0]
>>> "fit_formula" in dir(linearcnn)
True
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from linearcnn.errors import LinearCNNInputError

if TYPE_CHECKING:  # what static tools see; at run time the same names load lazily below
    from linearcnn.checkpoints import FirstLayer, load_first_layer
    from linearcnn.data import ImageDataset, has_test_split, load_dataset
    from linearcnn.dynamics import simulate
    from linearcnn.energy import energy_profile, profile_similarity, whitening_indicators
    from linearcnn.fit import FitResult, fit_filters, fit_formula
    from linearcnn.measurement import MeasureResult, measure
    from linearcnn.models import build_model
    from linearcnn.patches import PatchStats, dataset_patch_stats, patch_stats
    from linearcnn.theory import (
        derive,
        formula_profile,
        gradient_flow_profile,
        raw_formula_profile,
        raw_gradient_flow_profile,
        whitening_profile,
    )
    from linearcnn.train import TrainConfig, train_seeds

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
    "fit_filters": "linearcnn.fit",
    "measure": "linearcnn.measurement",
    "MeasureResult": "linearcnn.measurement",
    "FitResult": "linearcnn.fit",
    "build_model": "linearcnn.models",
    "TrainConfig": "linearcnn.train",
    "train_seeds": "linearcnn.train",
    "simulate": "linearcnn.dynamics",
}

__all__ = [
    "FirstLayer",
    "FitResult",
    "ImageDataset",
    "LinearCNNInputError",
    "MeasureResult",
    "PatchStats",
    "TrainConfig",
    "__version__",
    "build_model",
    "dataset_patch_stats",
    "derive",
    "energy_profile",
    "fit_filters",
    "fit_formula",
    "formula_profile",
    "gradient_flow_profile",
    "has_test_split",
    "load_dataset",
    "load_first_layer",
    "measure",
    "patch_stats",
    "profile_similarity",
    "raw_formula_profile",
    "raw_gradient_flow_profile",
    "simulate",
    "train_seeds",
    "whitening_indicators",
    "whitening_profile",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'linearcnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

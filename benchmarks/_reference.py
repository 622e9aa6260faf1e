"""The baseline of the benchmarks, and the machine they ran on.

`load_reference()` returns our own implementation of the authors' method (`baselines.py`, in this
folder) under the names the benchmarks call: `reference_patch_pca`, `reference_fit` and
`natural_like_images`. `load_reference(PATH)` (a benchmark's `--reference PATH`) imports another
file that defines those three names instead, e.g. a copy of the authors' own code.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

DEFAULT = "benchmarks/baselines.py, our implementation of the authors' method"


def load_reference(path: str | os.PathLike | None = None) -> Any:
    if path is None:
        import baselines

        return SimpleNamespace(
            reference_patch_pca=baselines.baseline_patch_pca,
            reference_fit=baselines.baseline_fit,
            natural_like_images=baselines.natural_like_images,
        )
    target = Path(path)
    if not target.is_file():
        sys.exit(f"error: --reference {str(target)!r} is not a file; expected a Python file defining the baseline")
    spec = importlib.util.spec_from_file_location("reference_method", target)
    if spec is None or spec.loader is None:
        sys.exit(f"error: --reference {str(target)!r} cannot be imported as a Python module")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measured_at() -> str:
    """Now, in UTC, as the results files record when they were measured (`date`)."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict:
    import numpy
    import torch

    import linearcnn

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "linearcnn": linearcnn.__version__,
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }

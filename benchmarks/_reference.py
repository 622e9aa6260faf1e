"""Locate and import the reference method (../shared/bench/reference_method.py) for benchmarks."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path
from types import ModuleType

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "reference_method.py"


def load_reference(path: str | os.PathLike | None = None) -> ModuleType:
    target = Path(path) if path else DEFAULT
    if not target.is_file():
        sys.exit(f"error: reference method not found at {target}; pass --reference PATH")
    spec = importlib.util.spec_from_file_location("reference_method", target)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


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

"""The key of the stored derivation results, computed without importing SymPy.

SHA-256 of `derivation.py`'s source and the installed SymPy's version (read from the package
metadata, so that a process evaluating the stored numpy functions never imports SymPy): what
`derived.json` and the generated `_lambdified.py` depend on. Both record it; each is used only
while its key equals this one.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import version
from pathlib import Path


@cache
def derivation_key() -> str:
    """SHA-256 of derivation.py's source and the SymPy version."""
    source = Path(__file__).with_name("derivation.py").read_bytes()
    return hashlib.sha256(source + b"\0sympy " + version("sympy").encode()).hexdigest()


__all__ = ["derivation_key"]

"""The example notebook runs from top to bottom, and is stored without outputs.

Its code cells run in order in one namespace, in a fresh interpreter (what a kernel would do),
without needing Jupyter; the last expression of each cell is evaluated as a notebook shows it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "first_layer.ipynb"

_RUNNER = r"""
import ast, json, sys
notebook = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
shown = []
for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
        continue
    tree = ast.parse("".join(cell["source"]))
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        shown.append(repr(eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)))
print(json.dumps(shown))
"""


def test_the_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_notebook_runs(tmp_path):
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(NOTEBOOK)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={"MPLBACKEND": "Agg", "LINEARCNN_CACHE_DIR": str(tmp_path / "cache"),
                                             "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown[0].startswith("PatchStats(3x3x3 patches of 'builtin:200'")
    assert shown[1].startswith("MeasureResult(layer 'conv1' (16 filters, 3x3x3, raw)")
    assert shown[2].startswith("MeasureResult(layer 'conv1' (16 filters, 3x3x3, init-subtracted)")
    correlation, tau = eval(shown[-1])
    assert 0.0 < correlation <= 1.0 and tau > 0

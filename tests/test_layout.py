"""The layout rules of the README's Architecture section, checked on the source itself.

Import statements are read with `ast` (nothing is imported), including those inside functions;
imports under `if TYPE_CHECKING:` are for static tools only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("linearcnn", "validation")
MAX_LINES = 500
LONG_FILE_NOTE = "Why this file is long:"  # a module over MAX_LINES lines says why in its docstring

# Rooms that must not reach "up" the data path (DESIGN: theory knows nothing of checkpoints, ...).
FORBIDDEN = {
    "linearcnn.theory": ("linearcnn.checkpoints", "linearcnn.fit", "linearcnn.train", "linearcnn.energy", "linearcnn.data"),
    "linearcnn.data": ("linearcnn.checkpoints", "linearcnn.fit", "linearcnn.train", "linearcnn.energy", "linearcnn.patches"),
    "linearcnn.patches": ("linearcnn.checkpoints", "linearcnn.fit", "linearcnn.train", "linearcnn.energy"),
    "linearcnn.models": ("linearcnn.checkpoints", "linearcnn.fit", "linearcnn.train", "linearcnn.energy", "linearcnn.patches"),
    "linearcnn.checkpoints": ("linearcnn.train", "linearcnn.fit", "linearcnn.energy"),
    "linearcnn.energy": ("linearcnn.train", "linearcnn.fit", "linearcnn.checkpoints"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (a `from pkg import sub` counts as pkg.sub when it is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {name: imported_modules(path, name, known) - {name} for name, path in files.items()}


def test_graph_is_read(graph):
    # The checks below mean something only if the reader finds the imports it should.
    assert "linearcnn.errors" in graph["linearcnn.device"]
    assert "linearcnn.cli" in graph["linearcnn.__main__"]


def test_no_import_cycle(graph):
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_cli(graph):
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (target == "linearcnn.cli" or target.startswith("linearcnn.cli."))
        and not (module.startswith("linearcnn.cli") or module == "linearcnn.__main__")
    )
    assert not offenders, offenders


def test_rooms_do_not_reach_up(graph):
    offenders = []
    for module, targets in graph.items():
        for room, forbidden in FORBIDDEN.items():
            if module == room or module.startswith(room + "."):
                offenders += [f"{module} imports {t}" for t in targets if any(t == f or t.startswith(f + ".") for f in forbidden)]
    assert not offenders, offenders


def test_no_sys_path_edits():
    offenders = [name for name, path in source_files().items() if "sys.path" in path.read_text()]
    assert not offenders, offenders


def test_long_files_say_why():
    offenders = []
    for name, path in source_files().items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_FILE_NOTE not in docstring:
            offenders.append(f"{name}: {lines} lines")
    assert not offenders, f"over {MAX_LINES} lines without '{LONG_FILE_NOTE}' in the docstring: {offenders}"


def test_facade_is_visible():
    import linearcnn

    names = dir(linearcnn)
    for name in linearcnn.__all__:
        assert name in names
        assert getattr(linearcnn, name) is not None


def test_facade_lists_every_lazy_name():
    import linearcnn

    assert set(linearcnn._LAZY) | {"LinearCNNInputError", "__version__"} == set(linearcnn.__all__)

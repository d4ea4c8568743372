"""The import graph of src/failtune has no cycle, counting every import (also those inside
functions and under TYPE_CHECKING, which would otherwise hide one). Built with the standard
library only: `ast` reads each module's imports, a depth-first search finds the cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under `root` (a folder holding top-level packages)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import of `name` loads: itself, or the nearest enclosing module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement loads: `from a import b` loads a.b when that is a
    module, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the module's own package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules of `package` it imports, anywhere in its body.

    An import of a module's own enclosing package (backends/hf.py taking BackendInfo from
    backends/__init__.py) is no edge: Python imports every enclosing package before the module
    anyway, so the package's own imports of its modules are what decides the order.
    """
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name != package and not name.startswith(package + "."):
            continue
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _imported(node, name, path.name == "__init__.py")
            # `from a import b`: the module a.b when there is one, else a itself.
            wanted = (
                [n for n in names[1:] if n in modules] or names[:1]
                if isinstance(node, ast.ImportFrom)
                else names
            )
            for dotted in wanted:
                target = _target(dotted, modules)
                if not target or target == name or target.split(".")[0] != package:
                    continue
                if name.startswith(target + "."):  # its own enclosing package
                    continue
                edges.add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan's algorithm), each a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(group, graph) for group in groups]


def _path_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest closed path a → … → a inside one strongly connected group (breadth first),
    for the failure message."""
    members, start = set(group), group[0]
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return [*group, start]


def test_failtune_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "failtune")
    assert len(graph) > 50  # the graph was read at all
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# Layers, lowest first: a module imports only from its own layer or the ones below.
LAYERS = (
    ("errors", "files", "console", "manifest", "model_loading"),  # the foundation
    ("config",),  # the option catalogue
    ("tasks", "grading", "backends"),
    ("evaluation", "rewards", "training", "validation"),  # the stages
    ("preflight",),  # checks of user input, before any work
    ("pipeline",),  # the resumable run
    ("reporting",),  # reads what runs and validations wrote
    ("demo", "cli", "api"),
)


def _layer(module: str) -> int:
    group = module.split(".")[1] if "." in module else "api"
    return next(i for i, names in enumerate(LAYERS) if group in names)


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = import_graph(SRC, "failtune")
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "members"),
    [
        (
            {  # at module level
                "pkg/__init__.py": "",
                "pkg/a.py": "from pkg.b import f\n",
                "pkg/b.py": "from pkg import c\n",
                "pkg/c.py": "import pkg.a\n",
            },
            ["pkg.a", "pkg.b", "pkg.c"],
        ),
        (
            {  # hidden in a function and under TYPE_CHECKING, relative imports
                "pkg/__init__.py": "",
                "pkg/sub/__init__.py": "",
                "pkg/sub/a.py": "def g():\n    from .b import f\n",
                "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from ..sub.a import g\n",
            },
            ["pkg.sub.a", "pkg.sub.b"],
        ),
    ],
)
def test_an_injected_cycle_is_found(
    tmp_path: Path, files: dict[str, str], members: list[str]
) -> None:
    root = _package(tmp_path, files)
    cycles = find_cycles(import_graph(root, "pkg"))
    assert len(cycles) == 1
    assert cycles[0][0] == cycles[0][-1] and sorted(cycles[0][:-1]) == members


def test_an_injected_cycle_in_failtune_fails(tmp_path: Path) -> None:
    """A copy of src/failtune with one lazy import added from the error module to the CLI."""
    import shutil

    shutil.copytree(SRC / "failtune", tmp_path / "failtune")
    errors = tmp_path / "failtune" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from failtune.cli import main\n")
    cycles = find_cycles(import_graph(tmp_path, "failtune"))
    assert any("failtune.errors" in c and "failtune.cli" in c for c in cycles)


def test_no_cycle_in_an_acyclic_package(tmp_path: Path) -> None:
    root = _package(
        tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "x = 1\n"}
    )
    assert find_cycles(import_graph(root, "pkg")) == []

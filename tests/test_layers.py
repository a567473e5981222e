"""The package's layers point one way: no import cycles, and export/ and runtime/ never import each other.

Read from the source with ``ast`` (imports inside functions count too: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import landmark_edge

PACKAGE = Path(landmark_edge.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from a.b import c``: ``a.b.c`` when that is a module, else ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in modules else node.module for name in submodules]
        else:
            continue
        found |= {name for name in names if name in modules}
    found.discard(module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle_and_a_clean_graph():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_from_imports():
    graph = import_graph()
    assert "landmark_edge.contracts" in graph["landmark_edge.export.onnx"]
    assert "landmark_edge.weights" in graph["landmark_edge.runtime.eager"]  # imported in a factory


def test_registry_entries_name_runtime_modules_only():
    """An entry names its factory and options as strings (imported when opened, unseen by the import graph), so
    they are checked here: a backend lives in runtime/, never in export/."""
    from landmark_edge.runtime.registry import backend_specs

    for spec in backend_specs():
        for reference in filter(None, (spec.factory, spec.options)):
            assert reference.startswith("landmark_edge.runtime."), f"{spec.name}: {reference}"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_export_and_runtime_do_not_import_each_other():
    crossing = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        for low, high in (("export", "runtime"), ("runtime", "export"))
        if source.startswith(f"landmark_edge.{low}") and target.startswith(f"landmark_edge.{high}")
    ]
    assert crossing == []

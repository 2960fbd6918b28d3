"""The package's import graph has no cycles.

Every ``import`` and ``from ... import`` in every module of ``src/lusifer`` counts, also
those inside functions and under ``if TYPE_CHECKING:``: a lazy or type-only import hides
a cycle from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "lusifer"
ROOT = Path(__file__).resolve().parents[2] / "src" / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` as the
    package itself)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: set[str]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.c`` where
    ``c`` is a function of module ``a.b`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from a import b`` imports module ``a.b`` when there is one, else ``a``
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            module = _known(target, modules)
            if module is not None and module != name:
                found.add(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    names = set(files)
    return {name: imports_of(name, path, names) for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles (``[a, b, ..., a]``) that together pass through every module of every
    strongly connected component with more than one module (Tarjan's algorithm,
    iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    cycles = []
    for component in components:
        covered: set[str] = set()
        for start in component:
            if start not in covered:
                cycle = _cycle_through(start, set(component), graph)
                covered.update(cycle)
                cycles.append(cycle)
    return cycles


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from ``start`` within its component (breadth-first search)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def test_graph_finds_the_modules_and_their_imports():
    graph = import_graph()
    assert f"{PACKAGE}.model.lusifer" in graph and PACKAGE in graph
    # a relative import, a function-level import and ``from . import module`` all count
    assert f"{PACKAGE}.model.loading" in graph[f"{PACKAGE}.model.lusifer"]
    assert f"{PACKAGE}.evaluation.mteb_model" in graph[f"{PACKAGE}.evaluation.runner"]
    assert f"{PACKAGE}.evaluation.significance" in graph[f"{PACKAGE}.evaluation.summary"]


def test_find_cycles_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    # two cycles sharing a module: both are reported
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}
    assert find_cycles(graph) == [["a", "b", "a"], ["c", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail(
            "import cycles in src/lusifer:\n"
            + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)
        )

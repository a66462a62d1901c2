"""The project's imports, read with `ast` (nothing is imported): no cycle between modules, and
no import that climbs back up the layers app.py > demo/ > trainers/ > zoo/ (docs/rooms.md).

Every import counts: at the top, under `TYPE_CHECKING` and inside functions; relative imports
are resolved against their package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.conftest import REPO

LAYERS = {"zoo": 0, "trainers": 1, "demo": 2, "app": 3}
"""A module may import its own layer and those below it, never one above."""

Graph = Mapping[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    """`trainers/fit/loop.py` -> `trainers.fit.loop`; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files(root: Path) -> dict[str, Path]:
    """The project's modules (app.py, zoo/, trainers/, demo/) by name."""
    paths = [
        root / "app.py",
        *(p for top in ("zoo", "trainers", "demo") for p in (root / top).rglob("*.py")),
    ]
    return {module_name(path, root): path for path in paths if path.is_file()}


def imported(source: str, name: str, is_package: bool, modules: set[str]) -> Iterable[str]:
    """The names of `modules` that the module `name` imports, relative imports resolved:
    `from X import Y` is X.Y where that is a module, else X."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project's modules it imports."""
    files = project_files(root)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        found = imported(source, name, path.name == "__init__.py", set(files))
        graph[name] = {target for target in found if target in files and target != name}
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (its modules in import order) per strongly connected group of modules that
    import each other, found by Tarjan's algorithm; [] when the graph has none."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(graph, set(group)) for group in groups]


def cycle_in(graph: Graph, group: set[str]) -> list[str]:
    """A path through `group` (modules that all reach each other) back to where it started."""
    start = min(group)
    path, seen = [start], {start}
    while True:
        target = min(t for t in graph[path[-1]] if t in group)
        if target in seen:
            return [*path[path.index(target) :], target]
        path.append(target)
        seen.add(target)


def upward_imports(graph: Graph) -> list[str]:
    """`a -> b` for each import of a module in a layer above the importer's."""
    layer = {name: LAYERS[name.partition(".")[0]] for name in graph}
    return [
        f"{name} -> {target}"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer[target] > layer[name]
    ]


def test_no_module_imports_itself_through_others() -> None:
    cycles = find_cycles(import_graph(REPO))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_climbs_back_up_the_layers() -> None:
    assert upward_imports(import_graph(REPO)) == []


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Relative, TYPE_CHECKING and function-level imports all make edges."""
    (tmp_path / "zoo").mkdir()
    (tmp_path / "app.py").write_text("def f():\n    import demo.views\n")
    (tmp_path / "zoo" / "__init__.py").write_text("from ._a import x\n")
    (tmp_path / "zoo" / "_a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import _b\n"
    )
    (tmp_path / "zoo" / "_b.py").write_text("from zoo import _a\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "app": set(),
        "zoo": {"zoo._a"},
        "zoo._a": {"zoo._b"},
        "zoo._b": {"zoo._a"},
    }
    assert find_cycles(graph) == [["zoo._a", "zoo._b", "zoo._a"]]


def test_the_cycle_finder_finds_a_planted_cycle_and_no_other() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_an_import_from_a_lower_layer_up_is_reported() -> None:
    graph = {"zoo._model": {"trainers.scores.metrics"}, "trainers.scores.metrics": set()}
    assert upward_imports(graph) == ["zoo._model -> trainers.scores.metrics"]
    assert (
        upward_imports(
            {"demo.views": {"zoo", "trainers.data"}, "zoo": set(), "trainers.data": set()}
        )
        == []
    )

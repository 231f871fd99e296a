"""The layers point one way: `wire/` imports nothing of Missive's but itself, the routes reach the store
only through the gateway or the pipeline, and no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"


def _imports() -> dict[str, set[str]]:
    """Module -> the Missive modules it imports (TYPE_CHECKING imports included)."""
    graph: dict[str, set[str]] = {}
    for path in (SOURCE / "missive").rglob("*.py"):
        module = ".".join(path.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("missive"):
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("missive")}
        graph[module] = found
    return {module: {name for name in found if name in graph and name != module} for module, found in graph.items()}


def test_wire_is_the_bottom_layer() -> None:
    wrong = {
        module: sorted(name for name in found if not name.startswith("missive.wire"))
        for module, found in _imports().items()
        if module.startswith("missive.wire")
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_routes_reach_the_store_only_through_the_gateway_or_the_pipeline() -> None:
    wrong = {
        module: sorted(name for name in found if name.startswith("missive.store"))
        for module, found in _imports().items()
        if module.startswith("missive.routes")
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles: set[str] = set()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for name in graph[module]:
            if name in path:
                cycles.add(" -> ".join(path[path.index(name) :] + [name]))
            elif name not in done:
                visit(name, [*path, name])
        done.add(module)

    for module in sorted(graph):
        visit(module, [module])
    assert sorted(cycles) == []

"""No import cycle among the package's modules, counting the imports written inside functions
too (a cycle hidden there is a cycle all the same): the layers import one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trio_echo"


def module_name(path: Path) -> str:
    """`trio_echo/server/core.py` -> `trio_echo.server.core`; a package's `__init__` is the
    package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The package's modules that `path` imports, anywhere in it. A module's own packages
    are left out: Python has them loaded before the module, so they make no cycle."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    name = module_name(path)
    ancestors = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
    return {module for module in found if module in MODULES and module not in {name, *ancestors}}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `edges` (its modules in order, the first again at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for after in sorted(edges.get(node, ())):
            if state.get(after) == "open":
                return [*path[path.index(after) :], after]
            if after not in state and (found := visit(after)) is not None:
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_finder_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert edges["trio_echo.lab"] >= {"trio_echo.fleet", "trio_echo.lab_network"}
    assert edges["trio_echo.server.core"] >= {"trio_echo.server.accept", "trio_echo.server.echo"}
    found = cycle_in(edges)
    if found is not None:
        pytest.fail("import cycle: " + " -> ".join(found))

"""The modules of tests/cluster import each other without a cycle: every import counts, also one
inside a function or under ``if TYPE_CHECKING``, so no module hides a cycle behind a late import."""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "tests.cluster"


def imported_siblings(path: Path) -> set[str]:
    """The modules of this package that ``path`` imports, by module name (``harness``, ``nodes``)."""
    siblings = {p.stem for p in HERE.glob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level == 1:
                module = name
            elif node.level == 0 and (name == PACKAGE or name.startswith(PACKAGE + ".")):
                module = name[len(PACKAGE) :].lstrip(".")
            else:
                continue
            # `from .nodes import x` names the module; `from . import nodes` names it in the list.
            out |= {module.split(".")[0]} if module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith(PACKAGE + ".")}
    return (out & siblings) - {path.stem}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path ``[a, b, ..., a]``; [] when the graph has none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for dep in sorted(graph.get(module, ())):
            cycle = visit(dep, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return []


def test_the_cluster_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: imported_siblings(p) for p in HERE.glob("*.py")}
    assert graph["nodes"], "the scan found none of nodes.py's imports"
    assert find_cycle(graph) == []


def test_a_cycle_is_found() -> None:
    assert find_cycle({"harness": {"nodes"}, "nodes": {"rundir", "harness"}, "rundir": set()}) == [
        "harness",
        "nodes",
        "harness",
    ]

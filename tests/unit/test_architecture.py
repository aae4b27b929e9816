"""The package layout is the architecture (DESIGN.md §1): these checks read the import statements
of every module under contract/src, worker/src and operator/src and hold the layers to it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "contract" / "src", ROOT / "worker" / "src", ROOT / "operator" / "src"]
MAX_MODULE_LINES = 300

#: swarm_worker's layers, lowest first: a module may import its own layer and the ones before it.
WORKER_LAYERS = ["maths", "protocol", "training", "node", "consensus", "roles", "simulation", "local"]
#: Exceptions to "lower never imports higher", each with its reason.
ALLOWED_UPWARD = {
    # A Byzantine worker is a worker process: the worker role asks the simulation what to send.
    ("roles", "simulation"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            parts = path.relative_to(src).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> Iterator[str]:
    """Every module `name` imports (absolute names), at any depth of its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, base]).strip(".")
            yield base
            # `from pkg import module` imports pkg.module when that is a module of ours
            yield from (f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)


def _internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        targets = set()
        for imported in _imports(name):
            # the imported module itself, or the deepest of our modules that contains it
            parts = imported.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in MODULES:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


GRAPH = _internal_graph()


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _externals(name: str) -> set[str]:
    return {i.split(".")[0] for i in _imports(name)}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "swarm_worker" and len(parts) > 2 else None


def test_the_graph_covers_the_packages() -> None:
    assert {"swarm_contract.spec", "swarm_worker.node.round", "swarm_operator.handlers"} <= set(MODULES)
    assert "swarm_contract.spec" in GRAPH["swarm_worker.node.round"]


def test_no_import_cycle() -> None:
    # A package's __init__ importing its own modules is not a cycle of the design, but none does.
    cyclic = sorted(name for name in GRAPH if name in _reachable(name))
    assert cyclic == []


def test_no_role_imports_another_role() -> None:
    roles = [n for n in MODULES if n.startswith("swarm_worker.roles.") and n != "swarm_worker.roles"]
    assert {r.rsplit(".", 1)[1] for r in roles} >= {"worker", "aggregator", "root"}
    for role in roles:
        assert GRAPH[role] & set(roles) == set(), role


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n)))
def test_layers_import_only_downwards(name: str) -> None:
    own = WORKER_LAYERS.index(_layer(name) or "")
    for target in GRAPH[name]:
        layer = _layer(target)
        if layer is None:
            continue
        assert WORKER_LAYERS.index(layer) <= own or (_layer(name), layer) in ALLOWED_UPWARD, (
            f"{name} imports {target}"
        )


def test_round_state_machine_is_pure() -> None:
    """No sockets or clocks in the round logic: zmq nowhere below it, the time passed in."""
    for name in ("swarm_worker.node.round", "swarm_worker.node.admission", "swarm_worker.node.round_plan"):
        closure = {name} | _reachable(name)
        assert not any("zmq" in _externals(m) for m in closure), name
        assert "time" not in _externals(name)


def test_contract_is_torch_free_and_stands_alone() -> None:
    for name in (n for n in MODULES if n.startswith("swarm_contract")):
        assert _externals(name) & {"torch", "zmq", "swarm_worker", "swarm_operator", "kopf"} == set(), name


def test_operator_never_imports_the_data_plane() -> None:
    for name in (n for n in MODULES if n.startswith("swarm_operator")):
        closure = {name} | _reachable(name)
        for module in closure:
            assert _externals(module) & {"torch", "zmq", "swarm_worker"} == set(), (name, module)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name].relative_to(ROOT)}: {lines} lines"

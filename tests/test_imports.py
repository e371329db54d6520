"""The import graph of our packages, read with ``ast``: no loop between two files, the two services apart, and
``shared/`` below both.

Every ``import`` counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import that hides a loop
is still a loop in the design. A name imported from a package (``from trading_gateway.bus import events``) is
the submodule when there is one, else the package's ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("management_server", "trading_gateway", "shared", "exchange_simulator", "freqfleet")
# Who may not import whom: each service stays out of the other and of the simulator; shared is below them all.
FORBIDDEN = {
    "trading_gateway": ("management_server", "exchange_simulator"),
    "management_server": ("trading_gateway", "exchange_simulator"),
    "exchange_simulator": ("trading_gateway", "management_server"),
    "shared": ("management_server", "trading_gateway", "exchange_simulator", "freqfleet"),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(path: Path, name: str, modules: dict[str, Path]) -> Iterator[str]:
    """The modules of ours that ``name`` (a module at ``path``) imports."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in modules else target


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imported(path, name, modules):
            # the deepest module of ours the import names (``a.b.c`` where only ``a.b`` is a file of ours)
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                edges.add(".".join(parts))
        graph[name] = edges
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "trading_gateway.fleet.service" in graph["trading_gateway.main"]
    assert "shared.bus.messages" in graph["management_server.bots.events"]


def test_no_import_loop_between_files() -> None:
    assert loops(import_graph()) == []


def test_the_services_stay_apart_and_shared_stays_below_them() -> None:
    crossings = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())
    ]
    assert crossings == []


def test_the_checks_catch_what_they_are_for() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert loops({"a": {"b"}, "b": set()}) == []

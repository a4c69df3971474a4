"""The shape of the code itself: no import cycle among the project's modules.

Every import statement counts, at module level or inside a function: a lazy import keeps
`--help` fast, but a cycle through one is still two modules that cannot be read (or moved)
one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "critic", "training", "inference", "dashboards", "data_cards", "satsang")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source."""
    paths = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            paths[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    graph = {}
    for name, path in paths.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}  # a name may be a submodule
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "on the path"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "on the path":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert {"training.runner", "training.config"} <= graph["training.pretrain"]
    assert "training.runner" in graph["training.sft"]
    # A cycle is found when there is one.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_itself_back_through_others():
    assert [" -> ".join(cycle) for cycle in cycles(import_graph())] == []

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


# ---- no module reaches into another's private names -------------------------------------------


# A namedtuple's methods start with "_" so as not to clash with its fields; they are its public API.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in NAMEDTUPLE_API


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines: functions, classes, assigned names and attributes (self._x = ...), fields."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [
                getattr(node, "target", None), *(item.optional_vars for item in getattr(node, "items", []))]
            for target in targets:
                for part in ast.walk(target) if target is not None else ():
                    if isinstance(part, ast.Name):
                        names.add(part.id)
                    elif isinstance(part, ast.Attribute):
                        names.add(part.attr)
    return names


def private_reaches(sources: dict[str, str]) -> list[str]:
    """`module:line: what` for each import of another project module's private name, and each use of
    `x._name` where `_name` is defined by another project module and not by this one (self. and cls. aside)."""
    trees = {name: ast.parse(source) for name, source in sources.items()}
    defined = {name: _defined_names(tree) for name, tree in trees.items()}
    found = []
    for module, tree in trees.items():
        elsewhere = {n for other, names in defined.items() if other != module for n in names if _is_private(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module in sources:
                found += [f"{module}:{node.lineno}: imports {node.module}.{alias.name}"
                          for alias in node.names if _is_private(alias.name)]
            elif (isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr in elsewhere
                  and node.attr not in defined[module]
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{module}:{node.lineno}: uses {ast.unparse(node)}")
    return found


def project_sources() -> dict[str, str]:
    sources = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            sources[name] = path.read_text(encoding="utf-8")
    return sources


def test_a_private_reach_is_found_when_there_is_one():
    sources = {
        "a": "class Store:\n    def _commit(self):\n        pass\n\ndef _parse():\n    pass\n",
        "b": "from a import _parse\nimport a\n\ndef run(store):\n    a._parse()\n    store._commit()\n",
        "c": "class Own:\n    def _setup(self):\n        pass\n\ndef make():\n    own = Own()\n    own._setup()\n",
    }
    assert private_reaches(sources) == ["b:1: imports a._parse", "b:5: uses a._parse", "b:6: uses store._commit"]


def test_no_module_imports_or_calls_another_modules_private_names():
    assert private_reaches(project_sources()) == []

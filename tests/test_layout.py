"""The package's layout: no import cycles, no oversized module or class, and
the facade stays engine-neutral.

Imports are read from the source with ``ast``: inside functions too, and
those under ``if TYPE_CHECKING:`` as well (a type-only import still ties two
modules together).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Dict, List, Set

import telemetry_orm

PACKAGE = Path(telemetry_orm.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``name`` imports (a package import counts as its ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()

    def resolve(target: str) -> None:
        # "from . import x" may name a module or a name of the package.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            if stem.startswith("telemetry_orm"):
                for alias in node.names:
                    full = f"{stem}.{alias.name}"
                    resolve(full if full in known else stem)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> Dict[str, Set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            connect(node)
    return groups


def test_the_checker_finds_a_cycle() -> None:
    # The checker itself: a cycle through a function-level import is found.
    known = {"telemetry_orm.a", "telemetry_orm.b"}
    graph = {"telemetry_orm.a": {"telemetry_orm.b"}, "telemetry_orm.b": {"telemetry_orm.a"}}
    assert cycles(graph) == [sorted(known)]
    assert cycles({"telemetry_orm.a": {"telemetry_orm.b"}, "telemetry_orm.b": set()}) == []


def test_the_checker_counts_type_only_imports(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from telemetry_orm import b\n")
    known = {"telemetry_orm.a", "telemetry_orm.b"}
    assert imports_of("telemetry_orm.a", source, known) == {"telemetry_orm.b"}


def test_no_import_cycles_inside_the_package() -> None:
    graph = import_graph()
    assert "telemetry_orm.store" in graph and graph["telemetry_orm.store"], graph
    assert cycles(graph) == []


def test_the_recorder_never_imports_the_store_and_the_errors_import_nothing() -> None:
    graph = import_graph()
    store = {name for name in graph["telemetry_orm.background"]
             if name == "telemetry_orm.store" or name.startswith("telemetry_orm.store.")}
    assert store == set()
    assert graph["telemetry_orm.errors"] == set()
    # The value rules sit just above the errors: every layer may call them.
    assert graph["telemetry_orm.checks"] == {"telemetry_orm.errors"}


#: The most physical lines a module, and a class, may have.
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 450


def module_sizes() -> Dict[str, int]:
    """Every module's physical lines."""
    return {name: len(path.read_text(encoding="utf-8").splitlines())
            for name, path in modules().items()}


def class_sizes(path: Path) -> Dict[str, int]:
    """Every class of ``path`` (nested ones too, as ``Outer.Inner``) and its
    lines, from its ``class`` line to its last line."""
    found: Dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                found[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_the_size_checker_counts_a_class_from_its_class_line_to_its_last(
        tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("@decorated\nclass A:\n    x = 1\n\n    class B:\n"
                      "        pass\n\n    def f(self):\n        return 2\n\n\nY = 3\n")
    assert class_sizes(source) == {"A": 8, "A.B": 2}


def test_no_module_is_over_700_lines() -> None:
    over = {name: lines for name, lines in module_sizes().items() if lines > MAX_MODULE_LINES}
    for name, lines in sorted(over.items()):
        print(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    assert over == {}


def test_no_class_is_over_450_lines() -> None:
    over = {f"{module}.{name}": lines
            for module, path in modules().items()
            for name, lines in class_sizes(path).items() if lines > MAX_CLASS_LINES}
    for name, lines in sorted(over.items()):
        print(f"{name}: {lines} lines (at most {MAX_CLASS_LINES})")
    assert over == {}


def _under(name: str, prefixes: Set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_lower_layers_never_import_higher_ones() -> None:
    graph = import_graph()
    higher = {"telemetry_orm.store", "telemetry_orm.cli", "telemetry_orm.background",
              "telemetry_orm.transfer", "telemetry_orm.migrate"}
    lower = {"telemetry_orm.reports", "telemetry_orm.report_query", "telemetry_orm.stats",
             "telemetry_orm.schema", "telemetry_orm.record", "telemetry_orm.engines",
             "telemetry_orm.tables", "telemetry_orm.rollups", "telemetry_orm.folding",
             "telemetry_orm.keys", "telemetry_orm.labels", "telemetry_orm.exports",
             "telemetry_orm.imports", "telemetry_orm.backends", "telemetry_orm.budgets",
             "telemetry_orm.reservations", "telemetry_orm.alerts"}
    checked = [name for name in graph if _under(name, lower)]
    assert "telemetry_orm.backends.mysql" in checked and "telemetry_orm.tables" in checked
    for low in checked:
        above = {name for name in graph[low] if _under(name, higher)}
        assert not above, (low, above)


def test_an_engines_modules_are_reached_only_through_the_registry() -> None:
    graph = import_graph()
    # backends/<engine>.py and its helpers backends/<engine>_*.py.
    shared = {"telemetry_orm.backends", "telemetry_orm.backends.base",
              "telemetry_orm.backends.upkeep"}
    engine_modules = {name for name in graph
                      if name.startswith("telemetry_orm.backends.") and name not in shared}
    assert {"telemetry_orm.backends.sqlite", "telemetry_orm.backends.postgres",
            "telemetry_orm.backends.mysql"} <= engine_modules

    def engine_of(module: str) -> str:
        return module.rpartition(".")[2].partition("_")[0]

    for name, imported in graph.items():
        for target in imported & engine_modules:
            # Only an engine's own modules import one another.
            assert name in engine_modules and engine_of(name) == engine_of(target), \
                (name, target)


def code_of(path: Path) -> str:
    """The source without comments and string literals (docstrings included)."""
    kept = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type not in (tokenize.COMMENT, tokenize.STRING):
            kept.append(token.string)
    return " ".join(kept)


def test_the_facade_names_no_engine_detail() -> None:
    code = " ".join(code_of(path) for path in sorted((PACKAGE / "store").glob("*.py")))
    for word in (r"\bwal\b", r"pragma", r"autocheckpoint", r"log_?pages", r"sqlite", r"postgres"):
        assert not re.search(word, code, re.IGNORECASE), word
    for mode in ("PASSIVE", "TRUNCATE", "RESTART"):
        assert mode not in code, mode

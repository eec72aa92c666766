"""The shape of the code, checked: no import cycle in mfg/ (imports inside functions count), the layers
import one way, and no module grows past about 600 lines without saying why at its top."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from mfg.config import PACKAGE_DIR

SIZE_LIMIT = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The mfg modules ``name`` imports, wherever in the file (a function-level import is a dependency too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("mfg"):
                yield target


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle_in_mfg():
    # packages import their modules to register them (mfg.models, mfg.web): a package's own __init__ is
    # not part of a cycle through its children
    assert _cycles() == []


def test_the_checker_sees_a_cycle_through_a_function_level_import():
    GRAPH["mfg.domain.values"].add("mfg.domain.calc")
    GRAPH["mfg.domain.calc"].add("mfg.domain.values")
    try:
        assert any({"mfg.domain.calc", "mfg.domain.values"} <= set(cycle) for cycle in _cycles())
    finally:
        GRAPH["mfg.domain.calc"].discard("mfg.domain.values")
        GRAPH["mfg.domain.values"] = set(_imports("mfg.domain.values", MODULES["mfg.domain.values"]))


def _third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_the_layers_import_one_way():
    """domain/ is pure (no Flask, no SQLAlchemy, nothing else of mfg but domain); services never import web;
    models import no service."""
    for name, path in MODULES.items():
        if name.startswith("mfg.domain"):
            assert not {"flask", "sqlalchemy", "flask_login", "flask_wtf", "weasyprint"} & _third_party(path), name
            assert all(target.startswith("mfg.domain") for target in GRAPH[name]), (name, GRAPH[name])
        if name.startswith("mfg.services"):
            assert not any(target.startswith("mfg.web") for target in GRAPH[name]), (name, GRAPH[name])
            assert "flask" not in _third_party(path), name
        if name.startswith("mfg.models"):
            assert not any(target.startswith(("mfg.services", "mfg.web")) for target in GRAPH[name]), name


def test_no_module_is_over_600_lines_without_a_reason_at_its_top():
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > SIZE_LIMIT:
            head = "\n".join(lines[:40]).lower()
            assert "longer than" in head and "because" in head, (
                f"{name} has {len(lines)} lines: split it, or say at its top why it is longer than {SIZE_LIMIT}")


def _private_uses(name: str, path: Path) -> list[str]:
    """``module._helper`` where ``module`` is another mfg module this one imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    modules.add(alias.asname)
    return [f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_module_uses_another_modules_private_helpers():
    found = {name: uses for name, path in MODULES.items() if (uses := _private_uses(name, path))}
    assert found == {}

"""No import cycle in any of the project's packages, counting every import a module
makes: at the top, inside functions, and behind ``TYPE_CHECKING``.

A cycle hidden in a function still ties two modules together (neither can be read,
moved or tested without the other) and only fails at run time, on the first call that
takes that path. The graph is read from the source (``ast``), so nothing is imported.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = ("flux_server", "flux_operator", "flux_client", "flux_contract")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _modules(package: str, root: Path) -> dict[str, Path]:
    """Every module of a package by dotted name (a package is its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The known modules that ``module`` imports, wherever in the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _nearest(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import mod`` imports the module ``pkg.mod`` when there is one.
                candidate = f"{base}.{alias.name}"
                if candidate in known:
                    yield candidate
                else:
                    yield from _nearest(base, known)


def _nearest(name: str, known: set[str]) -> Iterator[str]:
    parts = name.split(".")
    while parts:
        dotted = ".".join(parts)
        if dotted in known:
            yield dotted
            return
        parts.pop()


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports (itself excluded)."""
    modules: dict[str, Path] = {}
    for package in packages:
        root = _package_dir(package)
        if root is not None:
            modules.update(_modules(package, root))
    known = set(modules)
    return {
        name: {target for target in _imported(name, path, known) if target != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each
    sorted: every cycle of the graph lies inside one of them."""
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


def _a_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module, for the message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    while True:
        step = sorted(graph[path[-1]] & members)
        back = [t for t in step if t == start]
        if back and len(path) > 1:
            return [*path, start]
        fresh = [t for t in step if t not in seen] or step
        path.append(fresh[0])
        if fresh[0] in seen:
            return path
        seen.add(fresh[0])


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    if _package_dir(package) is None:
        pytest.skip(f"{package} is not in this checkout")
    graph = import_graph()
    mine = [c for c in cycles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not mine, "import cycles (function-level and TYPE_CHECKING imports included):\n" + (
        "\n".join(" -> ".join(_a_cycle(c, graph)) for c in mine)
    )


def test_the_checker_sees_cycles_inside_functions(tmp_path: Path) -> None:
    """The checker itself: a cycle made only by an import inside a function is found,
    and so is one behind ``TYPE_CHECKING``; a one-way graph is not reported."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("def f():\n    from cyclic.a import thing\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n"
    )
    (package / "d.py").write_text("import cyclic.c\n")
    (package / "e.py").write_text("from cyclic import a\n")
    modules = _modules("cyclic", package)
    graph = {
        name: set(_imported(name, path, set(modules))) - {name} for name, path in modules.items()
    }
    assert cycles(graph) == [["cyclic.a", "cyclic.b"], ["cyclic.c", "cyclic.d"]]

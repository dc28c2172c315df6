"""The code stays readable by its parts: no module over 400 lines, no function over 60, in
every package a reader must find their way in. The checker reads the files as text from
this checkout (not the installed packages), so it sees what is committed here.

(No import cycle, function-level imports included: tests/server/test_import_cycles.py
checks every package, and import-linter's contracts in pyproject.toml.)"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ROOTS = (
    "server/flux_server",
    "client/flux_client",
    "contract/flux_contract",
    "trainer/flux_trainer",
    "operator/flux_operator",
    "bench",
)
"""Every folder held to the limits, relative to the repository root."""

GENERATED = ("contract/flux_contract/_proto",)
"""Written by protoc, not by hand: their length is grpcio-tools' choice."""

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(path: Path, name: str) -> list[str]:
    """What in one module is over a limit: ``name: N lines`` for the module, and
    ``name.function: N lines`` for each function (methods and nested ones included)."""
    text = path.read_text()
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{name}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{name}.{node.name}: {lines} lines")
    return found


def modules(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if not relative.startswith(GENERATED):
            yield path


@pytest.mark.parametrize("root", ROOTS)
def test_modules_and_functions_are_short(root: str) -> None:
    paths = list(modules(REPO / root))
    assert len(paths) > 5, f"{root}: too few modules read; is the folder right?"
    long = [
        entry
        for path in paths
        for entry in oversized(path, path.relative_to(REPO).with_suffix("").as_posix())
    ]
    assert long == []


def test_the_checker_finds_a_long_module_and_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    short = "def short():\n    return 1\n"
    module = tmp_path / "crowded.py"
    module.write_text(f"def long():\n{body}\n\n{short}")
    assert oversized(module, "crowded") == [f"crowded.long: {MAX_FUNCTION_LINES + 1} lines"]

    method = "\n".join(f"        y{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    module.write_text(f"class C:\n    async def run(self):\n{method}\n")
    assert oversized(module, "crowded") == [f"crowded.run: {MAX_FUNCTION_LINES + 1} lines"]

    module.write_text(short + "\n" * MAX_MODULE_LINES)
    assert oversized(module, "crowded") == [f"crowded: {MAX_MODULE_LINES + 2} lines"]

    module.write_text(short + "\n" * (MAX_MODULE_LINES - 2))
    assert oversized(module, "crowded") == []

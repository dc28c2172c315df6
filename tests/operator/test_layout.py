"""The operator's package stays readable: no module over 400 lines, no function over 60.
(No import cycle, function-level imports included: tests/server/test_import_cycles.py
checks every package, this one among them, and import-linter's "No import cycle in the
operator".)"""

from __future__ import annotations

import ast
from pathlib import Path

import flux_operator

PACKAGE = Path(flux_operator.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_are_short() -> None:
    long = []
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 40  # the package is read
    for path in paths:
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []

"""The contract package stays light: importing all of it loads neither torch, nor an HTTP
client, nor the server, the operator or the SDK (import-linter checks the static imports;
this checks what really gets loaded, through third-party packages too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "flux_contract"
HEAVY = ("torch", "httpx", "fastapi", "kopf", "flux_server", "flux_operator", "flux_client")


def test_importing_the_contract_loads_nothing_heavy() -> None:
    modules = sorted(
        "flux_contract." + path.stem for path in CONTRACT.glob("*.py") if path.stem != "__init__"
    )
    assert {"flux_contract.wire", "flux_contract.metrics"} <= set(modules)
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"flux_contract loaded {done.stdout.strip()}"

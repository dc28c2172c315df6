"""The SDK is the light, base install: it works where torch and the server stack are absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "fastapi", "uvicorn", "kopf", "flux_server")

# Runs in a fresh interpreter in which importing any of HEAVY fails, as on a machine
# with only the base install.
_PROBE = f"""
import importlib.abc, sys
HEAVY = {HEAVY!r}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{{name}} is not installed")
        return None
sys.meta_path.insert(0, Absent())
import flux_client, flux_client.aio
from flux_client import FluxModelClient, AsyncFluxModelClient
for port in (8080, 50051):
    FluxModelClient(port=port).close()
AsyncFluxModelClient(port=8080)
print("ok")
"""


def test_sdk_works_without_torch_or_the_server_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_base_dependencies_are_light() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]
    }
    assert not names & set(HEAVY), names & set(HEAVY)
    assert {"grpcio", "protobuf", "httpx", "pillow", "pydantic"} <= names

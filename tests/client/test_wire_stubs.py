"""The committed gRPC stubs are what `make proto` generates from proto/ today."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "contract" / "flux_contract" / "_proto"


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate_stubs.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _tree(out), _tree(COMMITTED)
    tools = ", ".join(f"{name} {version(name)}" for name in ("grpcio-tools", "mypy-protobuf"))
    hint = f"run `make proto` (generated here with {tools}; pyproject pins the versions)"
    assert sorted(fresh) == sorted(committed), f"stub files differ: {hint}"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: {hint}"


def test_stubs_import_inside_the_package() -> None:
    from flux_contract._proto.fluxserve.v1 import fluxserve_pb2, fluxserve_pb2_grpc

    service = fluxserve_pb2.DESCRIPTOR.services_by_name["FluxService"]
    assert service.full_name == "fluxserve.v1.FluxService"
    assert {m.name for m in service.methods} == {
        "Generate",
        "GenerateStream",
        "ListPresets",
        "Edit",
        "VQA",
        "Submit",
        "GetJob",
        "CancelJob",
        "WatchJob",
        "Feedback",
        "ListExperiments",
    }
    assert hasattr(fluxserve_pb2_grpc, "FluxServiceStub")
    # The stubs resolve without the stub folder on sys.path.
    assert importlib.util.find_spec("fluxserve") is None

"""The audit log cannot be lost, against a real server process: a rotated file or a
removed directory is reopened; on a full disk (``/dev/full``: every write fails with
ENOSPC) a request is refused with 503 before any work, ``/readyz`` says not ready, a
metric counts the failures, and no image exists for a request without an audit line."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess

from flux_client.wire import pb, pb_grpc
from flux_server.admission.audit_ecs import parse_line


def _lines(path: Path) -> list[dict[str, Any]]:
    return [parse_line(x) for x in path.read_text().splitlines()] if path.exists() else []


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _generate(server: ServerProcess, request_id: str) -> httpx.Response:
    body = {"prompt": "a lighthouse", "seed": 7, "width": 64, "height": 64, "steps": 2}
    headers = {"Accept": "application/json", "X-Request-Id": request_id}
    return httpx.post(f"{server.url}/generate", json=body, headers=headers, timeout=120)


def test_rotation_and_a_removed_directory_lose_no_line(
    server_factory: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "logs" / "audit.jsonl"
    server = server_factory(tiny_model_dir, ["--audit-log", str(audit)])
    assert _generate(server, "before").status_code == 200
    audit.rename(tmp_path / "logs" / "audit.jsonl.1")
    assert _generate(server, "rotated").status_code == 200
    shutil.rmtree(audit.parent)
    assert _generate(server, "dir-removed").status_code == 200
    assert [x["request_id"] for x in _lines(audit)] == ["dir-removed"]
    assert _metric(server, "fluxserve_audit_write_failures_total") == 0
    server.stop()


def test_full_disk_refuses_before_any_work_and_recovers(
    server_factory: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.symlink_to("/dev/full")
    server: ServerProcess = server_factory(
        tiny_model_dir, ["--audit-log", str(audit), "--cache-bytes", str(1 << 24)]
    )
    refused = _generate(server, "full-1")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    assert "audit" in refused.json()["error"]["message"]
    # Refused before the pipeline ran: no image made, none cached.
    assert _metric(server, "fluxserve_images_generated_total") == 0
    assert _metric(server, "fluxserve_audit_write_failures_total") >= 1
    assert httpx.get(f"{server.url}/readyz").status_code == 503
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            pb_grpc.FluxServiceStub(channel).Generate(
                pb.GenerateRequest(params=pb.GenerationParams(prompt="a cat", seed=3))
            )
            raise AssertionError("served without an audit line")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _metric(server, "fluxserve_images_generated_total") == 0

    audit.unlink()  # space again
    _wait(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, "ready again")
    served = _generate(server, "full-2")
    assert served.status_code == 200
    assert served.json()["cache_hit"] is False  # the refused request cached nothing
    lines = _lines(audit)
    assert lines[0]["kind"] == "audit_gap" and lines[0]["failed_writes"] >= 2
    assert [x.get("request_id") for x in lines[1:]] == ["full-2"]
    assert lines[1]["decision"] == "accepted"
    server.stop()

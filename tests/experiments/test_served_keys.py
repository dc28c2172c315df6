"""With API keys, the key's user is the subject of experiments (an ``X-User-Id`` header
cannot move it to another arm), and feedback needs a key like every other call: a real
server process with a keys file."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import start_server

from flux_server.admission import keys
from flux_server.admission.audit_ecs import parse_line

from .served import BODY, EXPERIMENT, render_presets


def _new_key(path: Path, user: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, "--file", str(path)]) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def secured(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("keys")
    render_presets(root / "presets")
    keys_file = root / "keys"
    alice = _new_key(keys_file, "alice")
    audit = root / "audit.jsonl"
    process = start_server(
        tiny_flux_dir,
        root,
        ["--presets-dir", str(root / "presets"), "--api-keys", str(keys_file),
         "--audit-log", str(audit)],
        metrics_port=False,
    )  # fmt: skip
    try:
        process.wait_ready()
        with httpx.Client(base_url=process.url, timeout=120) as client:
            yield client, alice, audit
    finally:
        process.stop()


def test_the_key_user_is_the_subject(secured: Any) -> None:
    client, alice, audit = secured
    arms, request_ids = set(), []
    for claimed in ("u1", "u2", "u3", "u4", "u5", None):
        headers = {"Authorization": f"Bearer {alice}", "X-Customer-Group": "vip"}
        headers |= {"X-User-Id": claimed} if claimed else {}
        headers["Accept"] = "application/json"
        response = client.post("/generate", json=BODY, headers=headers)
        assert response.status_code == 200, response.text
        experiment = response.json()["experiment"]
        assert experiment["name"] == EXPERIMENT
        arms.add(experiment["arm"])
        request_ids.append(response.json()["request_id"])
    assert len(arms) == 1  # alice's arm, whatever X-User-Id claims
    lines = [parse_line(line) for line in audit.read_text("utf-8").splitlines()]
    subjects = {x["experiment"]["subject"] for x in lines if x["request_id"] in request_ids}
    assert subjects == {"user:alice"}


def test_feedback_needs_a_key(secured: Any) -> None:
    client, alice, _ = secured
    headers = {"Authorization": f"Bearer {alice}", "X-Customer-Group": "beta"}
    served = client.post("/generate", json=BODY, headers={**headers, "Accept": "application/json"})
    request_id = served.json()["request_id"]
    refused = client.post("/feedback", json={"request_id": request_id, "event": "like"})
    assert refused.status_code == 401 and refused.json()["error"]["field"] == "authorization"
    counted = client.post(
        "/feedback", json={"request_id": request_id, "event": "like"}, headers=headers
    )
    assert counted.status_code == 200 and counted.json()["counted"]

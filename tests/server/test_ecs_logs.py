"""A real server process (the tiny model) writes its log and its audit log as Elastic
Common Schema documents that the index template of deploy/elk takes whole: every line,
whatever wrote it, has each field mapped with a type that accepts its value; the request
log carries what the Kibana charts group by, the audit log every field it always kept.
``--log-format plain`` is text for a terminal."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from ecs_mappings import flat, line_problems
from server_process import ServerProcess

from flux_client.experiments import EXPERIMENTS_FILE, Arm, Experiment, experiments_to_file
from flux_client.presets import StylePreset, presets_to_files
from flux_server.admission import keys
from flux_server.admission.audit_ecs import parse_line

RELEASE = "v0.0.0-test"  # what server_process starts the server with


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _presets(directory: Path) -> None:
    """Two presets, and an experiment splitting requests for "realistic" between them."""
    presets = {
        "realistic": StylePreset(prompt_template="{prompt}, photorealistic"),
        "ink": StylePreset(prompt_template="{prompt}, ink drawing"),
    }
    experiment = Experiment(
        name="ink-filter",
        preset="realistic",
        arms=[
            Arm(name="control", preset="realistic", weight=50),
            Arm(name="ink", preset="ink", weight=50),
        ],
    )
    directory.mkdir()
    for name, text in presets_to_files(presets).items():
        (directory / name).write_text(text, "utf-8")
    (directory / EXPERIMENTS_FILE).write_text(experiments_to_file([experiment]), "utf-8")


def _key(path: Path, user: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert keys.main(["add", user, "--file", str(path)]) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def served(
    server_factory: Callable[..., ServerProcess], tiny_model_dir: Path, tmp_path_factory: Any
) -> Iterator[dict[str, Any]]:
    """A server with presets in an experiment, API keys and an audit log, after a served
    request, a refused one, one that failed past its deadline and an async job; then
    stopped, so that its log is complete."""
    root = tmp_path_factory.mktemp("ecs")
    _presets(root / "presets")
    key = _key(root / "keys", "alice")
    audit = root / "audit.jsonl"
    server = server_factory(
        tiny_model_dir,
        [
            *("--presets-dir", str(root / "presets")),
            *("--api-keys", str(root / "keys")),
            *("--audit-log", str(audit)),
        ],
        # Exec'd, not forked: every line of a process's log, its imports' included.
        fresh=True,
    )
    auth = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    body = {"prompt": "a lighthouse", "style_preset": "realistic", "width": 64, "height": 64}
    with httpx.Client(base_url=server.url, timeout=120, headers=auth) as client:
        ok = client.post("/generate", json=body, headers={"X-Request-Id": "ecs-served"})
        assert ok.status_code == 200, ok.text
        refused = client.post(
            "/generate",
            json={"prompt": "a n.u.d.3 statue"},
            headers={"X-Request-Id": "ecs-refused"},
        )
        assert refused.status_code == 400, refused.text
        late = client.post(
            "/generate",
            json={**body, "width": 256, "height": 256, "steps": 8},
            headers={"X-Request-Id": "ecs-late", "X-Request-Timeout": "0.001"},
        )
        assert late.status_code == 504, late.text
        submitted = client.post(
            "/generate", json=body, headers={"X-Request-Id": "ecs-job", "Prefer": "respond-async"}
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()["id"]
        _wait(
            lambda: client.get(f"/jobs/{job}").json()["status"] == "succeeded", "the job to succeed"
        )
    assert server.stop() == 0
    yield {
        "log": server.log().splitlines(),
        "audit": audit.read_text("utf-8").splitlines(),
        "arm": ok.json()["experiment"]["arm"],
        "job": job,
    }


def test_every_line_of_both_logs_is_an_ecs_document_the_template_takes(
    served: dict[str, Any],
) -> None:
    lines = served["log"] + served["audit"]
    assert len(lines) > 10
    problems = {line[:160]: p for line in lines if (p := line_problems(line))}
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)
    for line in lines:
        doc = flat(json.loads(line))
        datetime.fromisoformat(doc["@timestamp"])
        assert doc["service.name"] == "fluxserve-server" and doc["service.version"] == RELEASE
        assert doc["event.dataset"] in ("fluxserve.server", "fluxserve.audit")


def _records(lines: list[str], **wanted: Any) -> list[dict[str, Any]]:
    docs = [flat(json.loads(line)) for line in lines]
    return [d for d in docs if all(d.get(k) == v for k, v in wanted.items())]


def test_the_request_log_says_what_the_dashboards_group_by(served: dict[str, Any]) -> None:
    (line,) = _records(served["log"], **{"trace.id": "ecs-served", "message": "generated"})
    assert line["event.action"] == "generate" and line["event.outcome"] == "success"
    assert line["user.id"] == "alice" and len(line["span.id"]) == 16
    arm = served["arm"]
    assert line["fluxserve.experiment"] == "ink-filter" and line["fluxserve.arm"] == arm
    assert line["fluxserve.preset"] == ("realistic" if arm == "control" else "ink")
    assert line["fluxserve.release"] == RELEASE
    assert (line["fluxserve.size"], line["fluxserve.steps"]) == ("64x64", 2)
    assert line["fluxserve.latency_ms"] > 0
    assert line["event.duration"] == int(line["fluxserve.latency_ms"] * 1_000_000)
    (job,) = _records(served["log"], **{"trace.id": "ecs-job", "message": "job generated"})
    assert job["fluxserve.arm"] == arm and job["event.action"] == "generate"


def test_audit_lines_for_accepted_refused_and_failed_requests(served: dict[str, Any]) -> None:
    audit = served["audit"]
    (accepted,) = _records(audit, **{"trace.id": "ecs-served"})
    assert accepted["log.level"] == "info" and accepted["event.outcome"] == "success"
    assert accepted["fluxserve.audit.decision"] == "accepted"
    # Written before the answer: the work starts, its status is not known yet.
    assert accepted["fluxserve.audit.outcome"] == "accepted"
    assert "http.response.status_code" not in accepted
    assert accepted["fluxserve.audit.prompt"].startswith("a lighthouse")
    assert accepted["fluxserve.audit.params.width"] == 64
    (refused,) = _records(audit, **{"trace.id": "ecs-refused"})
    assert refused["log.level"] == "warning" and refused["event.reason"] == "blocklist"
    assert refused["fluxserve.audit.decision"] == "rejected"
    assert refused["http.response.status_code"] == 400 and refused["fluxserve.audit.detail"]
    accepted_late, failed = _records(audit, **{"trace.id": "ecs-late"})
    assert accepted_late["fluxserve.audit.decision"] == "accepted"
    assert failed["log.level"] == "error" and failed["event.outcome"] == "failure"
    assert failed["http.response.status_code"] == 504
    assert failed["fluxserve.audit.outcome"] == "failed"
    job_lines = _records(audit, **{"fluxserve.job_id": served["job"]})
    assert [x["fluxserve.audit.decision"] for x in job_lines] == ["submitted", "accepted"]


def test_audit_lines_read_back_as_the_records_they_were(served: dict[str, Any]) -> None:
    records = [parse_line(line) for line in served["audit"]]
    by_id = {r["request_id"]: r for r in records if r["decision"] != "accepted"}
    refused = by_id["ecs-refused"]
    assert (refused["user"], refused["reason"], refused["status"]) == ("alice", "blocklist", 400)
    assert refused["prompt"] == "a n.u.d.3 statue" and refused["endpoint"] == "rest:/generate"
    served_line = next(r for r in records if r["request_id"] == "ecs-served")
    assert served_line["experiment"]["name"] == "ink-filter"
    assert served_line["params"]["steps"] == 2 and served_line["cache_hit"] is False


def test_plain_format_is_text_for_a_terminal(
    server_factory: Callable[..., ServerProcess], tiny_model_dir: Path
) -> None:
    server = server_factory(tiny_model_dir, ["--log-format", "plain"], fresh=True)
    assert server.stop() == 0
    lines = server.log().splitlines()
    listening = next(line for line in lines if " listening" in line)
    assert "INFO" in listening and f"release={RELEASE}" in listening
    assert not any(line.startswith("{") for line in lines)

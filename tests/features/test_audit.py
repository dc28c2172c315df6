"""The audit log: Elastic Common Schema lines that keep every field of the record,
prompts hashed on demand, safe under concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from ecs_mappings import flat, line_problems

from flux_server.admission.audit import AuditLog, AuditRecord
from flux_server.admission.audit_ecs import parse_line


def _record(i: int = 0, **overrides: object) -> AuditRecord:
    fields: dict[str, object] = {
        "request_id": f"req-{i}",
        "user": "alice",
        "endpoint": "rest:/generate",
        "prompt": f"a lighthouse at dusk #{i}",
        "negative_prompt": "blurry",
        "params": {"width": 1024, "height": 1024, "steps": 28, "seed": i, "adapters": {}},
        "decision": "accepted",
        "status": 200,
        "latency_ms": 12.5,
        "cache_hit": False,
    }
    fields.update(overrides)
    return AuditRecord.model_validate(fields)


def _docs(path: Path) -> list[dict[str, Any]]:
    """The file's lines, each an ECS document with its fields named by dotted paths."""
    return [flat(json.loads(line)) for line in path.read_text("utf-8").splitlines()]


def _ids(path: Path) -> list[str]:
    return [doc["trace.id"] for doc in _docs(path)]


def test_file_gets_one_ecs_line_per_record(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(target, release="v1.4.2") as audit:
        audit.record(_record(1))
        audit.record(_record(2, decision="rejected", reason="blocklist", detail="nude", status=400))
        audit.record(_record(3, decision="rejected", reason="internal", status=500))
    raw = target.read_text("utf-8").splitlines()
    assert [line_problems(line) for line in raw] == [[], [], []]
    accepted, refused, failed = _docs(target)
    assert [accepted["trace.id"], refused["trace.id"]] == ["req-1", "req-2"]
    assert accepted["@timestamp"].endswith("Z") and accepted["ecs.version"]
    assert accepted["event.dataset"] == "fluxserve.audit" and accepted["log.level"] == "info"
    assert accepted["fluxserve.audit.kind"] == "audit"
    assert accepted["fluxserve.audit.prompt"] == "a lighthouse at dusk #1"
    assert accepted["fluxserve.audit.params.seed"] == 1
    assert (accepted["fluxserve.size"], accepted["fluxserve.steps"]) == ("1024x1024", 28)
    assert accepted["user.id"] == "alice" and accepted["fluxserve.endpoint"] == "rest:/generate"
    assert accepted["http.response.status_code"] == 200 and accepted["fluxserve.cache_hit"] is False
    assert accepted["fluxserve.latency_ms"] == 12.5 and accepted["event.duration"] == 12_500_000
    assert accepted["service.version"] == accepted["fluxserve.release"] == "v1.4.2"
    assert (refused["event.action"], refused["event.outcome"]) == ("rejected", "failure")
    assert refused["event.reason"] == "blocklist" and refused["fluxserve.audit.detail"] == "nude"
    assert refused["log.level"] == "warning" and failed["log.level"] == "error"


def test_every_field_reads_back_as_it_was_recorded(tmp_path: Path) -> None:
    """Nothing the record keeps is lost on the way to ECS and back (time to the ms)."""
    target = tmp_path / "audit.jsonl"
    record = _record(
        4,
        decision="rejected",
        reason="classifier",
        detail="nsfw 0.97",
        status=400,
        job_id="job-4",
        prompt_sha256="ab" * 32,
        params={"width": 64, "height": 64, "seed": None, "adapters": {}, "priority": True},
        experiment={"name": "ink-filter", "arm": "ink", "subject": "user:alice"},
    )
    with AuditLog(target) as audit:
        audit.record(record)
    (line,) = target.read_text("utf-8").splitlines()
    back = AuditRecord.model_validate(parse_line(line))
    millis = record.time.replace(microsecond=record.time.microsecond // 1000 * 1000)
    assert back == record.model_copy(update={"time": millis})


def test_hashed_prompts_leave_no_text(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    with AuditLog(target, hash_prompts=True) as audit:
        audit.record(_record(7))
    raw = target.read_text("utf-8")
    assert "lighthouse" not in raw and "blurry" not in raw
    (line,) = _docs(target)
    digest = hashlib.sha256(b"a lighthouse at dusk #7").hexdigest()
    assert line["fluxserve.audit.prompt_sha256"] == digest
    assert line["fluxserve.audit.negative_prompt_sha256"] == hashlib.sha256(b"blurry").hexdigest()
    assert "fluxserve.audit.prompt" not in line


def test_stdout_target(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog("-")
    audit.record(_record(3, user=None))
    line = flat(json.loads(capsys.readouterr().out))
    assert line["trace.id"] == "req-3"
    assert "user.id" not in line  # open server: no user


def test_file_is_appended_not_truncated(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    for i in range(2):
        with AuditLog(target) as audit:
            audit.record(_record(i))
    assert len(target.read_text("utf-8").splitlines()) == 2


def test_threads_never_interleave_lines(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    big_prompt = "x" * 20_000  # far beyond any atomic-pipe size
    with AuditLog(target) as audit:

        def writer(t: int) -> None:
            for i in range(50):
                audit.record(_record(t * 1000 + i, prompt=big_prompt))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = _ids(target)
    assert len(ids) == 400 and len(set(ids)) == 400


def _process_writer(target: str, worker: int) -> None:
    with AuditLog(target) as audit:
        for i in range(100):
            audit.record(_record(worker * 1000 + i, prompt="y" * 3000))


def test_processes_sharing_a_file_never_interleave_lines(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_process_writer, args=(str(target), w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(set(_ids(target))) == 300


def test_record_rejects_unknown_decision() -> None:
    with pytest.raises(ValueError, match="decision"):
        _record(decision="maybe")


def test_rotated_file_is_reopened(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    with AuditLog(target) as audit:
        audit.record(_record(1))
        target.rename(tmp_path / "audit.jsonl.1")  # logrotate's default: rename, no signal
        audit.record(_record(2))
    assert _ids(target) == ["req-2"]
    assert _ids(tmp_path / "audit.jsonl.1") == ["req-1"]


def test_removed_directory_is_recreated(tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(target) as audit:
        audit.record(_record(1))
        shutil.rmtree(target.parent)
        audit.record(_record(2))
    assert _ids(target) == ["req-2"]


def test_full_disk_raises_and_recovery_leaves_a_gap_line(tmp_path: Path) -> None:
    """/dev/full is a real full disk: every write fails with ENOSPC."""
    import errno

    from flux_server.admission.audit import AuditWriteError

    target = tmp_path / "audit.jsonl"
    target.symlink_to("/dev/full")
    failures: list[OSError] = []
    with AuditLog(target) as audit:
        audit.on_failure = failures.append
        assert audit.healthy()
        with pytest.raises(AuditWriteError) as raised:
            audit.record(_record(1))
        assert raised.value.errno == errno.ENOSPC
        assert not audit.healthy()  # tried again, still full
        assert len(failures) == 2
        target.unlink()  # space again: the path names a writable file
        assert audit.healthy()
        audit.record(_record(2))
    assert [line_problems(line) for line in target.read_text().splitlines()] == [[], []]
    gap, after = _docs(target)
    assert gap["fluxserve.audit.kind"] == "audit_gap" and gap["fluxserve.audit.failed_writes"] == 2
    assert gap["event.action"] == "audit_gap" and gap["log.level"] == "warning"
    assert _when(gap["event.start"]) <= _when(gap["@timestamp"])
    assert after["trace.id"] == "req-2"


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).astimezone(timezone.utc)

"""The audit log: JSON lines, prompts hashed on demand, safe under concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from flux_server.admission.audit import AuditLog, AuditRecord


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


def test_file_gets_one_json_line_per_record(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(target) as audit:
        audit.record(_record(1))
        audit.record(_record(2, decision="rejected", reason="blocklist", detail="nude", status=400))
    lines = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert [line["request_id"] for line in lines] == ["req-1", "req-2"]
    assert lines[0]["kind"] == "audit"
    assert lines[0]["prompt"] == "a lighthouse at dusk #1"
    assert lines[0]["params"]["seed"] == 1
    assert lines[0]["time"].endswith("Z") or lines[0]["time"].endswith("+00:00")
    assert lines[1]["decision"] == "rejected" and lines[1]["reason"] == "blocklist"
    assert lines[1]["detail"] == "nude"
    assert {"user", "latency_ms", "cache_hit", "status", "endpoint"} <= lines[0].keys()


def test_hashed_prompts_leave_no_text(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    with AuditLog(target, hash_prompts=True) as audit:
        audit.record(_record(7))
    raw = target.read_text("utf-8")
    assert "lighthouse" not in raw and "blurry" not in raw
    line = json.loads(raw)
    assert line["prompt_sha256"] == hashlib.sha256(b"a lighthouse at dusk #7").hexdigest()
    assert line["negative_prompt_sha256"] == hashlib.sha256(b"blurry").hexdigest()
    assert "prompt" not in line


def test_stdout_target(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog("-")
    audit.record(_record(3, user=None))
    line = json.loads(capsys.readouterr().out)
    assert line["request_id"] == "req-3"
    assert "user" not in line  # open server: no user


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
    ids = [json.loads(line)["request_id"] for line in target.read_text("utf-8").splitlines()]
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
    lines = target.read_text("utf-8").splitlines()
    assert len({json.loads(line)["request_id"] for line in lines}) == 300


def test_record_rejects_unknown_decision() -> None:
    with pytest.raises(ValueError, match="decision"):
        _record(decision="maybe")


def test_rotated_file_is_reopened(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    with AuditLog(target) as audit:
        audit.record(_record(1))
        target.rename(tmp_path / "audit.jsonl.1")  # logrotate's default: rename, no signal
        audit.record(_record(2))
    assert [json.loads(x)["request_id"] for x in target.read_text().splitlines()] == ["req-2"]
    rotated = (tmp_path / "audit.jsonl.1").read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in rotated] == ["req-1"]


def test_removed_directory_is_recreated(tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(target) as audit:
        audit.record(_record(1))
        shutil.rmtree(target.parent)
        audit.record(_record(2))
    assert [json.loads(x)["request_id"] for x in target.read_text().splitlines()] == ["req-2"]


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
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert lines[0]["kind"] == "audit_gap" and lines[0]["failed_writes"] == 2
    assert lines[0]["since"] <= lines[0]["time"]
    assert lines[1]["request_id"] == "req-2"

"""The fleet at the step, with real processes on one real Redis: a priority request that
arrives while a worker's batch runs is served at that batch's next step boundary (the
batch paused, then finished); an async job cancelled while it runs stops at the next
step, its entry acknowledged, the job ``canceled`` and audited; a front with a canary
weight queues on the canary track, which the stable worker never reads."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from server_process import ServerProcess

from .conftest import start_role

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LONG = 40  # steps: a running batch long enough to be interrupted mid-way


@pytest.fixture(scope="module")
def fleet(
    tiny_dir: Path, redis: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("step-fleet")
    url = redis.url  # type: ignore[attr-defined]
    audit = logs / "audit.log"
    procs = {
        "front": start_role(tiny_dir, logs, url, "front", "--audit-log", str(audit)),
        "canary_front": start_role(tiny_dir, logs, url, "front", "--canary-weight", "100"),
        "worker": start_role(tiny_dir, logs, url, "worker", "--max-batch-size", "2"),
    }
    try:
        for proc in procs.values():
            proc.wait_ready(timeout=400)
        client = sync_redis.Redis.from_url(url, decode_responses=True)
        yield {**procs, "audit": audit, "redis": client}
    finally:
        for proc in procs.values():
            if proc.process.poll() is None:
                proc.process.kill()
            proc.process.wait()


def _generate(url: str, prompt: str, steps: int, **headers: str) -> httpx.Response:
    body = {"prompt": prompt, "steps": steps, "width": 64, "height": 64, "seed": 1}
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=300)


def _until(check: Callable[[], Any], timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return got


def _event_seen(client: sync_redis.Redis, kind: str) -> Callable[[], bool]:
    """True once a worker published an event of ``kind`` for any request: ``started``
    as a call starts, ``progress`` after a finished step (for a job; a plain sync
    request's steps are not published: its front has no one to tell them to)."""
    pubsub = client.pubsub()
    pubsub.psubscribe("fluxserve:queue:events:*")

    def seen() -> bool:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        return bool(message and json.loads(message["data"]).get("type") == kind)

    return seen


def _records(proc: ServerProcess, message: str) -> list[dict[str, Any]]:
    return [r for r in proc.log_records() if r.get("message") == message]


def test_a_priority_request_under_load_is_served_at_the_next_step(
    fleet: dict[str, Any],
) -> None:
    url, worker = fleet["front"].url, fleet["worker"]
    started = _event_seen(fleet["redis"], "started")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        normal = [pool.submit(_generate, url, f"load {i}", LONG) for i in range(2)]
        _until(lambda: started() or any(f.done() for f in normal), what="a batch mid-call")
        assert not any(f.done() for f in normal), [f.result().text for f in normal]
        high = _generate(url, "urgent", 2, **{"X-Priority": "high"})
        loaded = [f.result() for f in normal]
    assert high.status_code == 200 and high.content.startswith(b"\x89PNG"), high.text
    assert [a.status_code for a in loaded] == [200, 200], [a.text for a in loaded]
    high_id = high.headers["x-request-id"]
    done = _records(worker, "queued batch done")
    order = [r["fluxserve.request_ids"] for r in done]
    at = order.index([high_id])
    assert done[at]["fluxserve.detail.at_step"] is True, done[at]
    # Served inside a running batch: one with a load request finished after it.
    later = {rid for ids in order[at + 1 :] for rid in ids}
    assert later & {a.headers["x-request-id"] for a in loaded}, order
    [paused] = _records(worker, "priority work at a step boundary")
    assert 1 <= paused["fluxserve.detail.paused_at_step"] < LONG, paused


def test_cancelling_a_running_job_stops_it_at_the_next_step(fleet: dict[str, Any]) -> None:
    url, worker, client = fleet["front"].url, fleet["worker"], fleet["redis"]
    progress = _event_seen(client, "progress")
    body = {"prompt": "to be cancelled", "steps": LONG, "width": 64, "height": 64}
    submitted = httpx.post(
        f"{url}/generate", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    assert submitted.status_code == 202, submitted.text
    job_id, request_id = submitted.json()["id"], submitted.headers["x-request-id"]
    _until(progress, what="the job to be mid-call")
    cancelled = httpx.post(f"{url}/jobs/{job_id}/cancel", timeout=30)
    assert cancelled.status_code in (200, 202), cancelled.text
    stopped = _until(
        lambda: [r for r in _records(worker, "queued work cancelled")
                 if request_id in r["fluxserve.request_ids"]],
        what="the worker to stop the job",
    )  # fmt: skip
    assert stopped
    [interrupted] = [
        r for r in _records(worker, "generation interrupted")
        if request_id in r["fluxserve.request_ids"]
    ]  # fmt: skip
    assert interrupted["fluxserve.step"] < LONG, interrupted
    job = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "canceled", job
    # Acknowledged and deleted; no result stored for it.
    stream = "fluxserve:queue:stable:normal:anonymous"
    assert client.xpending(stream, "workers")["pending"] == 0
    assert not client.exists(f"fluxserve:queue:result:{request_id}")
    audit = [json.loads(line) for line in fleet["audit"].read_text("utf-8").splitlines()]
    assert any(job_id in json.dumps(a) and "canceled" in json.dumps(a) for a in audit), audit


def test_a_canary_front_queues_on_the_canary_track_only(fleet: dict[str, Any]) -> None:
    client = fleet["redis"]
    body = {"prompt": "for the canary", "steps": 2, "width": 64, "height": 64}
    submitted = httpx.post(
        f"{fleet['canary_front'].url}/generate", json=body,
        headers={"Prefer": "respond-async"}, timeout=30,
    )  # fmt: skip
    assert submitted.status_code == 202, submitted.text
    # The stable worker serves stable work meanwhile, and leaves the canary's alone.
    assert _generate(fleet["front"].url, "stable work", 2).status_code == 200
    queue = httpx.get(f"{fleet['front'].url}/queue", timeout=10).json()
    assert queue["tracks"]["canary"]["normal"] == 1, queue
    assert client.xlen("fluxserve:queue:canary:normal:anonymous") == 1
    job_id = submitted.json()["id"]
    assert httpx.post(f"{fleet['canary_front'].url}/jobs/{job_id}/cancel", timeout=30).is_success


def test_a_worker_publishes_steps_only_where_the_front_relays_them(
    fleet: dict[str, Any],
) -> None:
    # A plain sync request: its front has no one to tell the steps to, and each event
    # costs the running call time; a job's steps reach its status and SSE events.
    pubsub = fleet["redis"].pubsub()
    pubsub.psubscribe("fluxserve:queue:events:*")
    url = fleet["front"].url
    plain = _generate(url, "steps unheard", 3, **{"X-Request-Id": "plain-sync"})
    assert plain.status_code == 200, plain.text
    body = {"prompt": "steps heard", "steps": 3, "width": 64, "height": 64}
    headers = {"Prefer": "respond-async", "X-Request-Id": "as-a-job"}
    job = httpx.post(f"{url}/generate", json=body, headers=headers, timeout=30)
    assert job.status_code == 202, job.text
    kinds: dict[str, list[str]] = {"plain-sync": [], "as-a-job": []}

    def job_done() -> bool:
        while message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05):
            request_id = str(message["channel"]).rsplit(":", 1)[-1]
            if request_id in kinds:
                kinds[request_id].append(json.loads(message["data"])["type"])
        return "done" in kinds["as-a-job"]

    _until(job_done, what="the job's done event")
    assert kinds["plain-sync"] == ["started", "done"], kinds
    assert kinds["as-a-job"] == ["started", "progress", "progress", "progress", "done"], kinds

"""Async jobs on the fleet's queue, one front and (later) one worker on a real Redis:
positions and warming_up while no worker runs, GET /queue and the depth gauge read from
the streams, a priority job first, a second key's one job served within the first turns
while another key floods, and 503 with Retry-After once Redis is gone."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess

from .conftest import start_role, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEYS = {"alice": "fxs_alice_key", "bob": "fxs_bob_key"}


@pytest.fixture(scope="module")
def front(
    tiny_dir: Path, redis: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("fleet-jobs")
    keys = work / "keys"
    keys.write_text(
        f"alice sha256:{hashlib.sha256(KEYS['alice'].encode()).hexdigest()} priority\n"
        f"bob sha256:{hashlib.sha256(KEYS['bob'].encode()).hexdigest()}\n",
        "utf-8",
    )
    proc = start_role(tiny_dir, work, redis.url, "front", "--api-keys", str(keys))  # type: ignore[attr-defined]
    try:
        proc.wait_ready(timeout=400)
        yield proc
    finally:
        proc.process.kill()
        proc.process.wait()


def _auth(user: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[user]}", **extra}


def _submit(front: ServerProcess, user: str, prompt: str, **headers: str) -> tuple[str, str]:
    """(job id, request id) of a new async job."""
    body = {"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 1}
    answer = httpx.post(
        f"{front.url}/generate", json=body, timeout=30,
        headers=_auth(user, Prefer="respond-async", **headers),
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    return answer.json()["id"], answer.headers["x-request-id"]


def _job(front: ServerProcess, user: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{front.url}/jobs/{job_id}", headers=_auth(user), timeout=10).json()


def _depth(front: ServerProcess, priority: str) -> float | None:
    for line in httpx.get(f"{front.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'fluxserve_queue_depth_by_priority{{priority="{priority}"}}'):
            return float(line.split()[-1])
    return None


def test_positions_fair_share_priority_then_a_worker_serves_all(
    front: ServerProcess, tiny_dir: Path, redis: object, tmp_path: Path
) -> None:
    first = [_submit(front, "alice", f"a{i}") for i in range(3)]
    for place, (job_id, _) in enumerate(first, start=1):
        job = until(lambda j=job_id: (b := _job(front, "alice", j)).get("position") and b,
                     what=f"the position of {job_id}")  # fmt: skip
        assert (job["status"], job["position"], job["warming_up"]) == ("queued", place, True)
        assert job["queue_position"] == place - 1 and "eta_seconds" not in job
    flood = [_submit(front, "alice", f"f{i}") for i in range(5)]
    bob = _submit(front, "bob", "the one")
    high = _submit(front, "alice", "urgent", **{"X-Priority": "high"})
    queue = httpx.get(f"{front.url}/queue", timeout=10).json()
    assert queue["source"] == "fleet" and queue["waiting"] == {"high": 1, "normal": 9}, queue
    assert queue["tracks"] == {"stable": {"high": 1, "normal": 9}} and queue["total"] == 10
    assert queue["workers_alive"] == 0 and queue["oldest_wait_s"] > 0
    # bob's one job waits behind the priority job and one turn of alice's, not her 8.
    bob_job = until(lambda: (b := _job(front, "bob", bob[0])).get("position") == 3 and b,
                     what="bob's fair position")  # fmt: skip
    assert bob_job["warming_up"] is True
    until(lambda: _depth(front, "high") == 1 and _depth(front, "normal") == 9, 10, "the gauge")

    worker = start_role(tiny_dir, tmp_path, redis.url, "worker", "--max-batch-size", "1")  # type: ignore[attr-defined]
    try:
        worker.wait_ready(timeout=400)
        everyone = [("alice", j) for j in first + flood + [high]] + [("bob", bob)]
        for user, (job_id, _) in everyone:
            until(lambda u=user, j=job_id: _job(front, u, j)["status"] == "succeeded", 120,
                   f"{job_id} to succeed")  # fmt: skip
        order = [rid for r in worker.log_records() if r.get("message") == "queued batch done"
                 for rid in r["fluxserve.request_ids"]]  # fmt: skip
    finally:
        worker.process.kill()
        worker.process.wait()
    assert sorted(order) == sorted(rid for _, (_, rid) in everyone), "each ran exactly once"
    assert order[0] == high[1], "the priority job runs first"
    assert bob[1] in order[:3], f"bob's job waited behind alice's flood: {order}"
    assert httpx.get(f"{front.url}/queue", timeout=10).json()["total"] == 0


def test_redis_down_answers_503_with_retry_after(front: ServerProcess, redis: object) -> None:
    redis.kill()  # type: ignore[attr-defined]
    body = {"prompt": "nobody takes it", "steps": 2, "width": 64, "height": 64}
    sync = httpx.post(f"{front.url}/generate", json=body, headers=_auth("bob"), timeout=30)
    job = httpx.post(f"{front.url}/generate", json=body, timeout=30,
                     headers=_auth("bob", Prefer="respond-async"))  # fmt: skip
    queue = httpx.get(f"{front.url}/queue", timeout=30)
    for answer in (sync, job, queue):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert answer.json()["error"]["code"] == "unavailable"

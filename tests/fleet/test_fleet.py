"""One front and two workers on one real Redis: work completes, a killed worker's work
is answered by another and nothing is generated twice, the front has no torch."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from server_process import ServerProcess

from .conftest import start_role

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def fleet(
    tiny_dir: Path, redis: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("fleet-logs")
    url = redis.url  # type: ignore[attr-defined]
    procs = {
        "front": start_role(tiny_dir, logs, url, "front"),
        "w1": start_role(tiny_dir, logs, url, "worker", "--max-batch-size", "4"),
        "w2": start_role(tiny_dir, logs, url, "worker", "--max-batch-size", "4"),
    }
    try:
        for proc in procs.values():
            proc.wait_ready(timeout=400)
        yield procs
    finally:
        for proc in procs.values():
            if proc.process.poll() is None:
                proc.process.kill()
            proc.process.wait()


def _generate(url: str, prompt: str, steps: int = 2, **headers: str) -> httpx.Response:
    body = {"prompt": prompt, "steps": steps, "width": 64, "height": 64, "seed": 1}
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=120)


def test_the_front_loads_no_torch(fleet: dict[str, ServerProcess]) -> None:
    ready = [r for r in fleet["front"].log_records() if r.get("message") == "ready"]
    assert ready and ready[0]["fluxserve.detail.torch_loaded"] is False, ready
    worker_ready = [r for r in fleet["w1"].log_records() if r.get("message") == "ready"]
    assert worker_ready[0]["fluxserve.detail.torch_loaded"] is True


def test_sync_requests_complete_through_the_queue(fleet: dict[str, ServerProcess]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _generate(fleet["front"].url, f"p{i}"), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert all(a.content.startswith(b"\x89PNG") for a in answers)


def test_a_killed_worker_loses_nothing_and_nothing_runs_twice(
    fleet: dict[str, ServerProcess], redis: object
) -> None:
    client = sync_redis.Redis.from_url(redis.url, decode_responses=True)  # type: ignore[attr-defined]
    # Slow requests (many steps) so that a worker is mid-batch when it is killed.
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(_generate, fleet["front"].url, f"k{i}", 40) for i in range(12)]
        victim = fleet["w1"]
        deadline = time.monotonic() + 60
        while not client.exists(*[k for k in client.scan_iter("fluxserve:queue:claim:*")] or ["x"]):
            assert time.monotonic() < deadline, "no worker started a batch"
            time.sleep(0.02)
        victim.process.send_signal(signal.SIGKILL)
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    assert all(a.content.startswith(b"\x89PNG") for a in answers)
    ids = [a.headers["x-request-id"] for a in answers]
    # Every request's result was stored exactly once, by whichever worker ran it.
    stored = {i: json.loads(client.get(f"fluxserve:queue:result:{i}") or "{}") for i in ids}
    assert all(stored[i].get("images") for i in ids)
    assert {stored[i]["worker"] for i in ids}  # stored by a worker, with its name
    done = [
        rid
        for name in ("w1", "w2")
        for r in fleet[name].log_records()
        if r.get("message") == "queued batch done"
        for rid in r["fluxserve.request_ids"]
    ]
    assert len(done) == len(set(done)), "a request was generated twice"

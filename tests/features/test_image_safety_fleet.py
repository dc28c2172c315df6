"""With the fleet queue, the image safety model runs on the worker (the front loads no
model): a flagged image never reaches Redis as an image; the front answers the content
refusal, audits it with reason image_classifier, and a job fails with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess, start_server

from flux_server.admission.audit_ecs import parse_line

from .redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REFUSED = "refused by the content policy (image_classifier)"


@pytest.fixture(scope="module")
def fleet(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess, Path]]:
    from flux_server.tools.tiny_image_safety import write_tiny_image_safety

    root = tmp_path_factory.mktemp("image-safety-fleet")
    classifier = write_tiny_image_safety(root / "classifier")
    redis = RedisServer(root)
    redis.start()
    audit = root / "audit.jsonl"
    queue = ["--queue", redis.url, "--visibility-timeout", "2", "--no-warmup"]
    front = start_server(
        tiny_flux_dir, root, [*queue, "--role", "front", "--audit-log", str(audit)]
    )
    worker = start_server(
        tiny_flux_dir,
        root,
        [*queue, "--role", "worker", "--image-safety-model", str(classifier),
         "--image-safety-threshold", "0"],
    )  # fmt: skip
    try:
        front.wait_ready(400)
        worker.wait_ready(400)
        yield front, worker, audit
    finally:
        for process in (front, worker):
            if process.process.poll() is None:
                process.process.kill()
            process.process.wait()
        redis.kill()


def _metrics(process: ServerProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=30).text


def test_the_worker_refuses_and_the_front_answers_and_audits(
    fleet: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    front, worker, audit = fleet
    answer = httpx.post(
        f"{front.url}/generate", json={"prompt": "a quiet harbour", "seed": 3}, timeout=120
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "content_rejected"
    assert REFUSED in answer.json()["error"]["message"]
    lines = [parse_line(line) for line in audit.read_text("utf-8").splitlines() if line]
    refused = [line for line in lines if line.get("reason") == "image_classifier"]
    assert refused and str(refused[0]["detail"]).startswith("nsfw:")
    assert "fluxserve_image_safety_flagged_total 1.0" in _metrics(worker)
    counted = 'fluxserve_safety_rejections_total{reason="image_classifier"} 1.0'
    assert counted in _metrics(front)


def test_a_job_through_the_queue_fails_with_the_refusal(
    fleet: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    front, _, _ = fleet
    accepted = httpx.post(
        f"{front.url}/generate",
        json={"prompt": "a field of tulips"},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{front.url}/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "failed", job
    assert REFUSED in job["error"]["message"]

"""The output check (``--image-safety-model``) against real server processes: a tiny
random ViT classifier (labels normal/nsfw) with its verdict forced by the threshold. At 0
every image is flagged, and no image leaves: not over REST, not over gRPC, not from a job,
not from an edit, not from the cache; each refusal is audited and counted. At 1 none is."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from built_once import built_once
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from rich_status import rich_error
from server_process import ServerProcess

from flux_client.wire import pb, pb_grpc
from flux_server.admission.audit_ecs import parse_line

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REFUSED = "refused by the content policy (image_classifier)"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def build(out: Path) -> None:
        from flux_server.tools.tiny_image_safety import write_tiny_image_safety

        write_tiny_image_safety(out, seed=0)

    return built_once(tmp_path_factory, "tiny-image-safety-seed0", build)


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-safety-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def servers(
    server_factory: Callable[..., ServerProcess],
    tiny_model_dir: Path,
    classifier_dir: Path,
    audit_path: Path,
) -> dict[str, ServerProcess]:
    """Started together: one flags every image (threshold 0; a result cache and editing
    on), one none (threshold 1)."""
    model = ["--image-safety-model", str(classifier_dir)]
    flags = [*model, "--image-safety-threshold", "0", "--audit-log", str(audit_path),
             "--enable-editing", "--cache-bytes", "1000000"]  # fmt: skip
    started = {
        "flagging": server_factory(tiny_model_dir, flags, wait=False),
        "passing": server_factory(
            tiny_model_dir, [*model, "--image-safety-threshold", "1"], wait=False
        ),
    }
    for server in started.values():
        server.wait_ready()
    return started


@pytest.fixture(scope="module")
def flagging(servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers["flagging"]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _audit(path: Path) -> list[dict[str, object]]:
    return [parse_line(line) for line in path.read_text("utf-8").splitlines() if line]


def _sample(server: ServerProcess, name: str, labels: dict[str, str] | None = None) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return float(sample.value)
    raise AssertionError(f"{name} {labels} not exported")


def _until(check: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_flagged_image_is_refused_over_rest_and_audited(
    flagging: ServerProcess, audit_path: Path
) -> None:
    body = {"prompt": "a lighthouse at dusk", "seed": 7}
    for _ in range(2):  # the second is not answered from the cache: nothing was stored
        answer = httpx.post(f"{flagging.url}/generate", json=body, timeout=120)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "content_rejected" and REFUSED in error["message"]
        assert not answer.headers["content-type"].startswith("image/")
    assert _sample(flagging, "fluxserve_cache_hits_total") == 0
    refused = [
        line for line in _audit(audit_path)
        if line.get("reason") == "image_classifier"
        and line.get("prompt") == "a lighthouse at dusk"
    ]  # fmt: skip
    assert len(refused) == 2
    assert refused[0]["decision"] == "rejected"
    assert str(refused[0]["detail"]).startswith("nsfw:")
    rejections = {"reason": "image_classifier"}
    assert _sample(flagging, "fluxserve_safety_rejections_total", rejections) >= 2
    assert _sample(flagging, "fluxserve_image_safety_flagged_total") >= 2
    assert _sample(flagging, "fluxserve_image_safety_duration_seconds_count") >= 2


def test_a_flagged_image_is_refused_over_grpc(flagging: ServerProcess) -> None:
    stub = pb_grpc.FluxServiceStub(grpc.insecure_channel(flagging.grpc_target))
    request = pb.GenerateRequest(params=pb.GenerationParams(prompt="a quiet harbour", num_images=2))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request, timeout=120)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert REFUSED in str(caught.value.details())
    assert rich_error(caught.value).reason == "CONTENT_REJECTED"


def test_a_flagged_edit_is_refused(flagging: ServerProcess, audit_path: Path) -> None:
    answer = httpx.post(
        f"{flagging.url}/edit",
        files={"image": ("a.png", _png(), "image/png")},
        data={"prompt": "a red square, brighter", "strength": "0.8"},
        timeout=120,
    )
    assert answer.status_code == 400 and REFUSED in answer.json()["error"]["message"]
    assert any(
        line.get("reason") == "image_classifier" and line.get("prompt") == "a red square, brighter"
        for line in _audit(audit_path)
    )


def test_a_flagged_job_fails_without_its_images(flagging: ServerProcess, audit_path: Path) -> None:
    accepted = httpx.post(
        f"{flagging.url}/generate",
        json={"prompt": "a field of tulips"},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def finished() -> dict[str, object] | None:
        job = httpx.get(f"{flagging.url}/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed") else None

    job = _until(finished, "the job's outcome")
    assert isinstance(job, dict) and job["status"] == "failed"
    assert job["error"]["code"] == "content_rejected" and REFUSED in job["error"]["message"]
    assert httpx.get(f"{flagging.url}/jobs/{job_id}/images/0").status_code == 404
    outcome = _until(
        lambda: [
            line for line in _audit(audit_path)
            if line.get("job_id") == job_id
            and line.get("decision") == "rejected"
        ],
        "the job's audit line",
    )  # fmt: skip
    assert isinstance(outcome, list) and outcome[0]["reason"] == "image_classifier"
    assert str(outcome[0]["detail"]).startswith("nsfw:")


def test_threshold_one_flags_nothing(servers: dict[str, ServerProcess]) -> None:
    server = servers["passing"]
    answer = httpx.post(f"{server.url}/generate", json={"prompt": "a lighthouse"}, timeout=120)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert _sample(server, "fluxserve_image_safety_flagged_total") == 0
    assert _sample(server, "fluxserve_image_safety_duration_seconds_count") == 1

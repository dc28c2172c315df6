"""An async job reports the experiment arm it was assigned at submission, the arm a
synchronous request for the same user is served in: over REST (the ``202``'s JSON and
``X-Fluxserve-Experiment``, ``GET /jobs/{id}``, an async edit), over gRPC (``Job.experiment``)
and through the SDK (``submit().wait().experiment``); against a real server process (the
tiny model) whose jobs live in a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from features.redis_server import RedisServer
from server_process import start_server

from flux_client import FluxModelClient
from flux_client.names import parse_header_value
from flux_client.wire import EXPERIMENT_HEADER, USER_ID_METADATA, pb, pb_grpc

from .served import BODY, EXPERIMENT, generate, render_presets

USERS = [f"user-{i:03d}" for i in range(6)]
ASYNC = {"Prefer": "respond-async", "X-Customer-Group": "beta"}


@pytest.fixture(scope="module")
def server(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("served-jobs")
    render_presets(root / "presets")
    redis = RedisServer(root)
    redis.start()
    process = start_server(
        tiny_flux_dir,
        root,
        ["--presets-dir", str(root / "presets"), "--redis-url", redis.url, "--enable-editing"],
        metrics_port=False,
    )
    try:
        process.wait_ready()
        with httpx.Client(base_url=process.url, timeout=120) as client:
            yield process, client
    finally:
        process.stop()
        redis.kill()


@pytest.fixture(scope="module")
def arms(server: Any) -> dict[str, dict[str, str]]:
    """Each user's arm as a synchronous ``/generate`` answers it (the JSON ``experiment``)."""
    _, client = server
    return {user: generate(client, user).json()["experiment"] for user in USERS}


def until(condition: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not met in {timeout}s"
        time.sleep(0.05)
    return value


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def succeeded() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        assert body["status"] in ("queued", "running", "succeeded"), body
        return body if body["status"] == "succeeded" else None

    return dict(until(succeeded))


def test_a_rest_job_reports_the_arm_of_a_synchronous_request(
    server: Any, arms: dict[str, dict[str, str]]
) -> None:
    _, client = server
    assert {arm["name"] for arm in arms.values()} == {EXPERIMENT}
    for user, arm in arms.items():
        response = client.post("/generate", json=BODY, headers={**ASYNC, "X-User-Id": user})
        assert response.status_code == 202, response.text
        assert response.json()["experiment"] == arm
        assert parse_header_value(response.headers[EXPERIMENT_HEADER]) == (EXPERIMENT, arm["arm"])
        assert finished(client, response.json()["id"])["experiment"] == arm


def test_an_async_edit_reports_its_arm(server: Any, arms: dict[str, dict[str, str]]) -> None:
    _, client = server
    source = generate(client, None, None).json()["images"][0]["b64"]
    user = USERS[0]
    response = client.post(
        "/edit",
        json={**BODY, "image": source, "prompt": "a lighthouse at night"},
        headers={**ASYNC, "X-User-Id": user},
    )
    assert response.status_code == 202, response.text
    assert response.json()["experiment"] == arms[user]
    assert parse_header_value(response.headers[EXPERIMENT_HEADER])[1] == arms[user]["arm"]
    done = finished(client, response.json()["id"])
    assert done["kind"] == "edit" and done["experiment"] == arms[user]


def test_outside_the_audience_a_job_names_no_arm(server: Any) -> None:
    process, client = server
    response = client.post(
        "/generate", json=BODY, headers={"Prefer": "respond-async", "X-User-Id": USERS[0]}
    )
    assert response.status_code == 202, response.text
    assert EXPERIMENT_HEADER not in response.headers
    assert response.json()["experiment"] is None
    assert finished(client, response.json()["id"])["experiment"] is None
    with grpc.insecure_channel(process.grpc_target) as channel:
        job = pb_grpc.FluxServiceStub(channel).Submit(
            pb.SubmitRequest(params=pb.GenerationParams(**BODY)),
            metadata=((USER_ID_METADATA, USERS[0]),),
            timeout=120,
        )
    assert not job.HasField("experiment")


def test_a_grpc_job_reports_the_arm_of_a_synchronous_request(
    server: Any, arms: dict[str, dict[str, str]]
) -> None:
    process, _ = server
    with grpc.insecure_channel(process.grpc_target) as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        for user, arm in arms.items():
            submitted = stub.Submit(
                pb.SubmitRequest(params=pb.GenerationParams(**BODY)),
                metadata=((USER_ID_METADATA, user), ("x-customer-group", "beta")),
                timeout=120,
            )
            assert submitted.HasField("experiment")
            named = submitted.experiment
            assert {"name": named.name, "arm": named.arm, "preset": named.preset} == arm

            def succeeded(job_id: str = submitted.id) -> pb.Job | None:
                job = stub.GetJob(pb.JobRequest(id=job_id), timeout=120)
                return job if job.status == "succeeded" else None

            assert until(succeeded).experiment == submitted.experiment


def test_the_sdk_job_result_names_the_arm_over_rest_and_grpc(
    server: Any, arms: dict[str, dict[str, str]]
) -> None:
    process, _ = server
    options: dict[str, Any] = {k: v for k, v in BODY.items() if k != "prompt"}
    for port in (process.http_port, process.grpc_port):
        with FluxModelClient("127.0.0.1", port, timeout=120) as sdk:
            for user in USERS[:3]:
                synchronous = sdk.generate_images(
                    BODY["prompt"], user_id=user, headers={"X-Customer-Group": "vip"}, **options
                )
                assert synchronous.experiment is not None
                assert synchronous.experiment.model_dump() == arms[user]
                job = sdk.submit(
                    BODY["prompt"], user_id=user, headers={"X-Customer-Group": "vip"}, **options
                )
                assert job.info is not None and job.info.experiment == synchronous.experiment
                result = job.wait(timeout=120)
                assert result.experiment == synchronous.experiment, port
                assert job.status().experiment == synchronous.experiment
            outside = sdk.submit(BODY["prompt"], user_id=USERS[0], **options)
            assert outside.wait(timeout=120).experiment is None

"""The server over real sockets (REST, gRPC, the SDK) with the tiny random FLUX."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from rich_status import rich_error
from server_process import ServerProcess

from flux_client import FluxModelClient
from flux_client.wire import pb, pb_grpc

JSON = {"Accept": "application/json"}
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(
    server_factory: Callable[..., ServerProcess], tiny_model_dir: Path, presets_dir: Path
) -> ServerProcess:
    return server_factory(
        tiny_model_dir,
        [
            "--presets-dir", str(presets_dir),
            "--max-batch-size", "4",
            "--max-delay-ms", "300",
            "--max-side", "512",
            "--max-steps", "50",
            "--max-body-bytes", str(MAX_BODY),
            "--cache-bytes", "0",
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.FluxServiceStub:
    return pb_grpc.FluxServiceStub(grpc.insecure_channel(server.grpc_target))


def metric(server: ServerProcess, name: str, port: int | None = None) -> float:
    text = httpx.get(f"http://127.0.0.1:{port or server.http_port}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


def post(
    server: ServerProcess, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(f"{server.url}/generate", json=body, headers=headers, timeout=60)


# -- REST ---------------------------------------------------------------------------------


def test_rest_returns_a_png_of_the_requested_size(server: ServerProcess) -> None:
    response = post(server, {"prompt": "a futuristic city", "width": 80, "height": 48, "seed": 1})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", (80, 48))
    assert response.headers["x-seed"] == "1"
    assert int(response.headers["x-batch-size"]) >= 1
    assert response.headers["x-request-id"]


def test_article_request_with_its_preset(server: ServerProcess) -> None:
    payload = {
        "prompt": "a futuristic city at sunset, cyberpunk style, flying cars, neon lights",
        "negative_prompt": "blurry, low resolution, distorted faces",
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance_scale": 7.5,
        "style_preset": "cyberpunk",
    }
    response = httpx.post(
        f"{server.url}/generate",
        content=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_json_answer_has_every_image_with_seeds_and_timings(
    server: ServerProcess, tiny_model_dir: Path
) -> None:
    response = post(
        server,
        {"prompt": "a cat", "num_images": 2, "seed": 40, "output_format": "jpeg"},
        JSON,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [image["seed"] for image in body["images"]] == [40, 41]
    assert {image["format"] for image in body["images"]} == {"jpeg"}
    first = Image.open(io.BytesIO(base64.b64decode(body["images"][0]["b64"])))
    assert (first.format, first.size) == ("JPEG", (64, 64))
    assert body["release"] == "v0.0.0-test"
    assert body["model"] == str(tiny_model_dir)
    assert body["batch_size"] >= 1 and body["cache_hit"] is False
    assert set(body["timings"]) == {"queue_ms", "inference_ms", "total_ms"}
    assert body["timings"]["total_ms"] >= body["timings"]["inference_ms"] > 0


def test_same_seed_same_bytes_across_apis(
    server: ServerProcess, stub: pb_grpc.FluxServiceStub
) -> None:
    body = {"prompt": "a lighthouse", "seed": 1234, "width": 48, "height": 48}
    first = post(server, body).content
    second = post(server, body).content
    assert first == second
    assert post(server, {**body, "seed": 1235}).content != first
    reply = stub.Generate(
        pb.GenerateRequest(
            params=pb.GenerationParams(prompt="a lighthouse", seed=1234, width=48, height=48)
        ),
        timeout=60,
    )
    assert reply.images[0].data == first


@pytest.mark.parametrize(
    "body,status,field,words",
    [
        ({"prompt": "x", "width": 100}, 422, "width", "multiple of 16"),
        ({"prompt": "x", "width": 1024}, 422, "width", "limit of 512"),
        ({"prompt": "x", "height": 2048}, 422, "height", "limit of 512"),
        ({"prompt": "x", "steps": 51}, 422, "steps", "limit of 50"),
        ({"prompt": "x", "steps": 0}, 422, "steps", "greater than or equal to 1"),
        ({"prompt": ""}, 422, "prompt", "at least 1 character"),
        ({"prompt": "   "}, 422, "prompt", "blank"),
        ({"negative_prompt": "x"}, 422, "prompt", "required"),
        ({"prompt": "x", "style_preset": "baroque"}, 400, "style_preset", "cyberpunk"),
        ({"prompt": "x", "num_images": 9}, 422, "num_images", "limit of 4"),
        ({"prompt": "x", "seed": -1}, 422, "seed", "greater than or equal to 0"),
        ({"prompt": "x", "output_format": "gif"}, 422, "output_format", "png"),
        ({"prompt": "x", "adapters": [{"name": "ink"}]}, 400, "adapters[0].name", "unknown"),
        ({"prompt": "x", "sampler": "euler"}, 422, "sampler", "not permitted"),
        (["prompt"], 400, "body", "JSON object"),
    ],
)
def test_bad_input_names_the_field(
    server: ServerProcess, body: object, status: int, field: str, words: str
) -> None:
    response = post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]


def test_malformed_and_oversized_bodies(server: ServerProcess) -> None:
    malformed = httpx.post(
        f"{server.url}/generate",
        content=b'{"prompt": "x",',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["field"] == "body"
    assert "not valid JSON" in malformed.json()["error"]["message"]

    oversized = post(server, {"prompt": "x" * (MAX_BODY + 1)})
    assert oversized.status_code == 413
    error = oversized.json()["error"]
    assert error["field"] == "body" and str(MAX_BODY) in error["message"]

    deep = httpx.post(
        f"{server.url}/generate",
        content=b"[" * 20_000 + b"]" * 20_000,
        headers={"Content-Type": "application/json"},
    )
    assert deep.status_code == 400, deep.text
    assert deep.json()["error"]["field"] == "body"
    assert "nested too deeply" in deep.json()["error"]["message"]

    long_prompt = post(server, {"prompt": "x" * 2001})
    assert long_prompt.status_code == 422 and long_prompt.json()["error"]["field"] == "prompt"


def test_a_query_string_is_refused_not_ignored(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/generate?steps=5", json={"prompt": "x"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "steps"
    assert "JSON body" in response.json()["error"]["message"]


def test_bad_headers_name_the_header(server: ServerProcess) -> None:
    response = post(server, {"prompt": "x"}, {"X-Priority": "urgent"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "X-Priority"
    response = post(server, {"prompt": "x"}, {"X-Request-Timeout": "soon"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "X-Request-Timeout"


def test_unknown_paths_and_methods_answer_in_the_error_shape(server: ServerProcess) -> None:
    missing = httpx.get(f"{server.url}/generat")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(f"{server.url}/generate")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def test_deadline_gives_504(server: ServerProcess) -> None:
    response = post(
        server,
        {"prompt": "a slow one", "width": 512, "height": 512, "steps": 20},
        {"X-Request-Timeout": "0.01"},
    )
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "deadline_exceeded"


def test_probes_presets_openapi_metrics(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["release"] == "v0.0.0-test"
    assert ready.json()["device"] == "cpu" and ready.json()["load_seconds"] > 0
    presets = httpx.get(f"{server.url}/v1/presets").json()["presets"]
    assert {p["name"] for p in presets} == {"cyberpunk", "sketch"}
    cyberpunk = next(p for p in presets if p["name"] == "cyberpunk")
    assert cyberpunk["promptTemplate"] == "{prompt}, cyberpunk, neon"
    openapi = httpx.get(f"{server.url}/openapi.json").json()
    generate = openapi["paths"]["/generate"]["post"]
    assert {"X-Priority", "X-Request-Timeout"} <= {p["name"] for p in generate["parameters"]}
    error = generate["responses"]["422"]["content"]["application/json"]["schema"]
    assert error["properties"]["error"]["required"] == ["code", "message", "field"]
    assert {"400", "429", "503", "504"} <= set(generate["responses"])
    assert metric(server, "fluxserve_queue_depth") >= 0
    queue = httpx.get(f"{server.url}/queue").json()  # alone: its batcher, the fleet's shape
    assert (queue["source"], queue["workers_alive"], queue["total"]) == ("local", 1, 0), queue
    assert "/v1/queue" in openapi["paths"] and "QueueStatus" in openapi["components"]["schemas"]
    assert metric(server, "fluxserve_ready") == 1
    # The separate Prometheus port serves the same registry.
    assert metric(server, "fluxserve_ready", port=server.metrics_port) == 1
    assert post(server, {"prompt": "counted", "seed": 5}).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    assert "fluxserve_model_info{" in text and 'release="v0.0.0-test"' in text
    assert 'fluxserve_requests_total{code="200",endpoint="rest:/generate"}' in text


# -- gRPC ---------------------------------------------------------------------------------


def test_grpc_generate_stream_presets_health_reflection(
    server: ServerProcess, stub: pb_grpc.FluxServiceStub
) -> None:
    reply = stub.Generate(
        pb.GenerateRequest(params=pb.GenerationParams(prompt="a fox", width=32, height=64, seed=3)),
        timeout=60,
    )
    image = Image.open(io.BytesIO(reply.images[0].data))
    assert image.size == (32, 64) and reply.images[0].seed == 3
    assert reply.release == "v0.0.0-test" and reply.batch_size >= 1 and reply.request_id

    events = list(
        stub.GenerateStream(
            pb.GenerateRequest(params=pb.GenerationParams(prompt="a fox", steps=3, seed=1)),
            timeout=60,
        )
    )
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["progress", "progress", "progress", "result"]
    assert [e.progress.step for e in events[:3]] == [1, 2, 3]
    assert events[-1].result.images[0].seed == 1

    names = {p.name for p in stub.ListPresets(pb.ListPresetsRequest(), timeout=10).presets}
    assert names == {"cyberpunk", "sketch"}

    channel = grpc.insecure_channel(server.grpc_target)
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="fluxserve.v1.FluxService"), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    listing = next(
        reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    )
    services = {s.name for s in listing.list_services_response.service}
    assert "fluxserve.v1.FluxService" in services and "grpc.health.v1.Health" in services


def test_grpc_errors_carry_code_and_field(stub: pb_grpc.FluxServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(
            pb.GenerateRequest(params=pb.GenerationParams(prompt="x", width=100)), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rich = rich_error(caught.value)
    assert (rich.reason, rich.domain, rich.field) == ("INVALID_ARGUMENT", "fluxserve.v1", "width")
    assert rich.request_id

    with pytest.raises(grpc.RpcError) as caught:
        list(
            stub.GenerateStream(
                pb.GenerateRequest(params=pb.GenerationParams(prompt="x", style_preset="nope")),
                timeout=10,
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (rich_error(caught.value).reason, rich_error(caught.value).field) == (
        "UNKNOWN_NAME",
        "style_preset",
    )

    # An enum value this server does not know is refused, not served as NORMAL.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(
            pb.GenerateRequest(params=pb.GenerationParams(prompt="x", priority=7)), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(caught.value).field == "priority"

    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(
            pb.GenerateRequest(
                params=pb.GenerationParams(prompt="slow", width=512, height=512, steps=20)
            ),
            timeout=0.05,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- the SDK ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_generates_and_writes_the_file(
    server: ServerProcess, tmp_path: Path, transport: str
) -> None:
    port = server.grpc_port if transport == "grpc" else server.http_port
    with FluxModelClient(host="127.0.0.1", port=port, transport=transport, timeout=60) as client:
        out = tmp_path / "briefcase_detail.png"
        image = client.generate(
            prompt="a close-up of a silver briefcase on a wooden table, studio lighting",
            seed=77,
            output_path=out,
        )
        assert image.size == (64, 64)
        assert Image.open(out).size == (64, 64)
        direct = post(
            server,
            {
                "prompt": "a close-up of a silver briefcase on a wooden table, studio lighting",
                "seed": 77,
            },
        )
        assert out.read_bytes() == direct.content


# -- scheduling ---------------------------------------------------------------------------


async def test_concurrent_requests_form_batches(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=JSON) as client:
        replies = await asyncio.gather(
            *(client.post("/generate", json={"prompt": f"city {i}", "seed": i}) for i in range(16))
        )
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    sizes = [r.json()["batch_size"] for r in replies]
    assert max(sizes) > 1, sizes
    assert all(1 <= size <= 4 for size in sizes)
    assert [r.json()["images"][0]["seed"] for r in replies] == list(range(16))


async def test_priority_request_overtakes_the_queue(server: ServerProcess) -> None:
    finished: list[str] = []
    slow = {"width": 256, "height": 256, "steps": 12}

    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:

        async def call(name: str, body: dict[str, object], headers: dict[str, str]) -> None:
            response = await client.post("/generate", json=body, headers=headers)
            assert response.status_code == 200, response.text
            finished.append(name)

        # Different step counts: the normal requests cannot batch together.
        normal = [
            asyncio.create_task(call(f"n{i}", {"prompt": "n", **slow, "steps": 8 + i}, {}))
            for i in range(6)
        ]
        async with asyncio.timeout(120):
            while metric(server, "fluxserve_queue_depth") < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        urgent = asyncio.create_task(
            call("urgent", {"prompt": "u", "width": 64, "height": 64}, {"X-Priority": "high"})
        )
        await asyncio.gather(*normal, urgent)
    # At least 4 normal requests were waiting when it came; at most the one already
    # running (and one racing in) can finish before it.
    assert finished.index("urgent") <= 2, finished

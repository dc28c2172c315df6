"""A/B experiments tried as a new user would, against a real server process (the tiny
model) serving the presets ConfigMap the operator renders for the example FluxDeployment:
300 users split about 50/30/20, each always in the same arm, over REST and gRPC; likes
recorded; the report says whether the impressionist filter wins."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import start_server

from flux_client import FluxModelClient, GenerationResult, NotFoundError
from flux_client.names import parse_header_value
from flux_client.wire import EXPERIMENT_HEADER, EXPERIMENT_METADATA, USER_ID_METADATA, pb, pb_grpc
from flux_server.admission.audit_ecs import parse_line

from .served import BODY, EXPERIMENT, generate, likes, render_presets

USERS = [f"user-{i:03d}" for i in range(300)]
WEIGHTS = {"control": 50, "impressionist": 30, "ink": 20}
# Simulated like rates (percent) per arm: the impressionist filter is liked more.
LIKE_RATES = {"control": 20, "impressionist": 45, "ink": 20}


@pytest.fixture(scope="module")
def server(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("served")
    render_presets(root / "presets")
    audit = root / "audit.jsonl"
    process = start_server(
        tiny_flux_dir,
        root,
        ["--presets-dir", str(root / "presets"), "--audit-log", str(audit), "--enable-editing"],
        metrics_port=False,
    )
    try:
        process.wait_ready()
        with httpx.Client(base_url=process.url, timeout=120) as client:
            yield process, client, audit
    finally:
        process.stop()


@pytest.fixture(scope="module")
def served(server: Any) -> dict[str, Any]:
    """Every user asks twice for the realistic preset (a beta customer), and likes the
    image at the arm's rate; what each answer said."""
    _, client, _ = server
    arms: dict[str, str] = {}
    liked: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for user in USERS:
        seen = set()
        for _ in range(2):
            response = generate(client, user)
            body = response.json()
            experiment = body["experiment"]
            assert experiment["name"] == EXPERIMENT
            # The header says what the JSON says.
            assert parse_header_value(response.headers[EXPERIMENT_HEADER]) == (
                EXPERIMENT,
                experiment["arm"],
            )
            seen.add(experiment["arm"])
            requests[experiment["arm"]] += 1
        assert len(seen) == 1, f"{user} moved between arms: {seen}"
        arms[user] = seen.pop()
        if likes(user, arms[user], LIKE_RATES):
            feedback = client.post(
                "/feedback", json={"request_id": body["request_id"], "event": "like", "value": 1}
            )
            assert feedback.status_code == 200, feedback.text
            assert feedback.json()["arm"] == arms[user] and feedback.json()["counted"]
            liked[arms[user]] += 1
    return {"arms": arms, "liked": liked, "requests": requests}


def test_users_split_about_50_30_20_and_stay_in_their_arm(served: dict[str, Any]) -> None:
    split = Counter(served["arms"].values())
    # Each count is binomial(300, w); within 4 standard deviations of 300 * w (a chance
    # of about 1 in 16 000 per arm of failing by bad luck; the hash is fixed, so a run
    # that passes always passes).
    for arm, weight in WEIGHTS.items():
        p = weight / 100
        sd = (300 * p * (1 - p)) ** 0.5
        assert abs(split[arm] - 300 * p) <= 4 * sd, (arm, split)


def test_prometheus_has_each_arm(server: Any, served: dict[str, Any]) -> None:
    _, client, _ = server
    samples = {
        (sample.name, sample.labels.get("arm"), sample.labels.get("event")): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.labels.get("experiment") == EXPERIMENT
    }
    for arm in WEIGHTS:
        assert (
            samples[("fluxserve_experiment_requests_total", arm, None)] >= served["requests"][arm]
        )
        assert samples[("fluxserve_experiment_feedback_total", arm, "like")] == served["liked"][arm]
        assert samples[("fluxserve_experiment_gpu_seconds_total", arm, None)] > 0


def test_the_report_tells_whether_the_impressionist_filter_wins(
    server: Any, served: dict[str, Any]
) -> None:
    process, _, _ = server
    command = [sys.executable, "-m", "flux_client", "--port", str(process.http_port)]
    out = subprocess.run(
        [*command, "experiments", "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)["experiments"]
    assert report["name"] == EXPERIMENT
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert [arm["name"] for arm in report["arms"]] == list(WEIGHTS)  # control first
    for name in WEIGHTS:
        assert arms[name]["requests"] == served["requests"][name]
        assert arms[name]["events"]["like"]["count"] == served["liked"][name]
        assert arms[name]["gpu_seconds_per_image"] > 0  # one image computed per arm
        assert arms[name]["latency_p50_seconds"] is not None
    (won,) = [c for c in report["comparisons"] if c["arm"] == "impressionist"]
    assert won["event"] == "like" and won["verdict"] == "higher", won
    assert won["p_value"] < 0.05 and won["ci95"][0] > 0
    # The table says it in words, and the gRPC port gives the same report.
    grpc_port = str(process.grpc_port)
    table = subprocess.run(
        [sys.executable, "-m", "flux_client", "--port", grpc_port, "experiments"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert "higher than control" in table.stdout and "impressionist-filter" in table.stdout


def test_the_sdk_sees_the_same_arm_over_rest_and_grpc(server: Any, served: dict[str, Any]) -> None:
    process, _, _ = server
    for port in (process.http_port, process.grpc_port):
        with FluxModelClient("127.0.0.1", port, timeout=120) as client:
            for user in USERS[:5]:
                result = client.generate_images(
                    BODY["prompt"],
                    style_preset="realistic",
                    seed=BODY["seed"],
                    width=64,
                    height=64,
                    steps=1,
                    user_id=user,
                    headers={"X-Customer-Group": "vip"},
                )
                assert result.experiment is not None
                assert result.experiment.name == EXPERIMENT
                assert result.experiment.arm == served["arms"][user]
            counts = client.list_experiments()
            assert [arm.name for arm in counts.experiments[0].arms] == list(WEIGHTS)


def test_streams_edits_and_the_cli_name_the_arm(server: Any, served: dict[str, Any]) -> None:
    process, client, _ = server
    user = next(u for u, arm in served["arms"].items() if arm == "impressionist")
    options: dict[str, Any] = {
        "style_preset": "realistic",
        "seed": 7,
        "steps": 1,
        "user_id": user,
        "headers": {"X-Customer-Group": "beta"},
    }
    source = generate(client, None, None).json()["images"][0]["b64"]
    with FluxModelClient("127.0.0.1", process.grpc_port, timeout=120) as sdk:
        *_, last = sdk.stream("a lighthouse", width=64, height=64, **options)
        assert isinstance(last, GenerationResult) and last.experiment is not None
        assert last.experiment.arm == "impressionist"
        edited = sdk.edit_images(base64.b64decode(source), "a lighthouse at night", **options)
        assert edited.experiment is not None and edited.experiment.arm == "impressionist"
    with FluxModelClient("127.0.0.1", process.http_port, timeout=120) as sdk:
        edited = sdk.edit_images(base64.b64decode(source), "a lighthouse at night", **options)
        assert edited.experiment is not None and edited.experiment.arm == "impressionist"
    cli = [sys.executable, "-m", "flux_client", "--port", str(process.grpc_port)]
    out = subprocess.run(
        [*cli, "generate", "a lighthouse", "--style-preset", "realistic", "--seed", "7",
         "--steps", "1", "--width", "64", "--height", "64", "--user-id", user,
         "--header", "X-Customer-Group=beta", "-o", str(Path(process.log_path).parent / "o.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"experiment {EXPERIMENT}: arm impressionist" in out.stdout
    request_id = out.stdout.split("request ", 1)[1].split(":", 1)[0]
    liked = subprocess.run(
        [*cli, "feedback", request_id, "share"], capture_output=True, text=True, timeout=60
    )
    assert liked.returncode == 0, liked.stderr
    assert "share for impressionist-filter: arm impressionist (counted)" in liked.stdout


def test_grpc_trailing_metadata_names_the_arm(server: Any, served: dict[str, Any]) -> None:
    process, _, _ = server
    user = USERS[0]
    request = pb.GenerateRequest(
        params=pb.GenerationParams(
            prompt=BODY["prompt"], style_preset="realistic", seed=7, width=64, height=64, steps=1
        )
    )
    with grpc.insecure_channel(process.grpc_target) as channel:
        reply, call = pb_grpc.FluxServiceStub(channel).Generate.with_call(
            request,
            metadata=((USER_ID_METADATA, user), ("x-customer-group", "beta")),
            timeout=120,
        )
    trailing = dict(call.trailing_metadata())
    assert parse_header_value(trailing[EXPERIMENT_METADATA]) == (EXPERIMENT, served["arms"][user])
    assert reply.experiment.name == EXPERIMENT and reply.experiment.arm == served["arms"][user]


def test_outside_the_audience_the_plain_preset_serves(server: Any) -> None:
    _, client, audit = server
    for user, group in (("user-000", None), ("user-000", "free"), (None, "beta")):
        response = generate(client, user, group)
        assert EXPERIMENT_HEADER not in response.headers
        body = response.json()
        assert body["experiment"] is None
        line = _audit_line(audit, body["request_id"])
        assert line["params"]["style_preset"] == "realistic" and line.get("experiment") is None
        assert line["prompt"].endswith("photorealistic, soft light")


def test_the_audit_line_records_experiment_arm_and_subject(
    server: Any, served: dict[str, Any]
) -> None:
    _, client, audit = server
    user = next(u for u, arm in served["arms"].items() if arm == "ink")
    body = generate(client, user).json()
    line = _audit_line(audit, body["request_id"])
    assert line["experiment"] == {"name": EXPERIMENT, "arm": "ink", "subject": f"id:{user}"}
    # The arm's preset replaced the requested one; the request's own fields still won.
    assert line["params"]["style_preset"] == "水墨" and line["params"]["steps"] == 1
    assert line["prompt"] == "a lighthouse, 水墨画, ink wash"
    assert body["experiment"]["preset"] == "水墨"


def test_a_unicode_preset_name_from_request_to_response(server: Any) -> None:
    process, client, audit = server
    rest = generate(client, None, None, style_preset="水墨").json()
    assert _audit_line(audit, rest["request_id"])["prompt"] == "a lighthouse, 水墨画, ink wash"
    with FluxModelClient("127.0.0.1", process.grpc_port, timeout=120) as sdk:
        assert "水墨" in sdk.list_presets()
        result = sdk.generate_images("a lighthouse", style_preset="水墨", seed=7, steps=1)
    line = _audit_line(audit, result.request_id)
    assert (
        line["prompt"] == "a lighthouse, 水墨画, ink wash" and line["endpoint"] == "grpc:Generate"
    )
    # In an experiment, the arm's Unicode preset comes back in the gRPC result too.
    with grpc.insecure_channel(process.grpc_target) as channel:
        stub = pb_grpc.FluxServiceStub(channel)
        params = pb.GenerationParams(prompt="a lighthouse", style_preset="realistic", seed=7)
        for i in range(40):
            reply = stub.Generate(
                pb.GenerateRequest(params=params),
                metadata=((USER_ID_METADATA, f"unicode-{i}"), ("x-customer-group", "beta")),
                timeout=120,
            )
            if reply.experiment.arm == "ink":
                assert reply.experiment.preset == "水墨"
                break
        else:
            raise AssertionError("no user of 40 landed in the ink arm")


def test_feedback_for_an_unknown_request_is_not_found(server: Any) -> None:
    process, client, _ = server
    outside = generate(client, None, None).json()["request_id"]  # served, in no experiment
    for request_id in ("never-served", outside):
        response = client.post("/feedback", json={"request_id": request_id, "event": "like"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_id"
        assert response.json()["error"]["field"] == "request_id"
    for port in (process.http_port, process.grpc_port):
        with FluxModelClient("127.0.0.1", port, timeout=30) as sdk:
            with pytest.raises(NotFoundError) as caught:
                sdk.feedback("never-served", "like")
            assert caught.value.code == "unknown_id"


def test_bad_feedback_names_the_field(server: Any, served: dict[str, Any]) -> None:
    _, client, _ = server
    for body, field in (
        ({"request_id": "x", "event": "a b"}, "event"),
        ({"request_id": "x", "event": "like", "value": 2}, "value"),
        ({"request_id": "x"}, "event"),
        ({"request_id": "x", "event": "like", "extra": 1}, "extra"),
    ):
        response = client.post("/feedback", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field


def test_openapi_documents_feedback_and_experiments(server: Any) -> None:
    _, client, _ = server
    spec = client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/feedback"] and "get" in spec["paths"]["/experiments"]
    assert "404" in spec["paths"]["/feedback"]["post"]["responses"]
    names = [p["name"] for p in spec["paths"]["/generate"]["post"]["parameters"]]
    assert "X-User-Id" in names

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(spec))
    assert found  # the experiments' body is described by reference
    for ref in found:
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # KeyError: a $ref that does not resolve


def _audit_line(audit: Path, request_id: str) -> dict[str, Any]:
    for line in audit.read_text("utf-8").splitlines():
        record = parse_line(line)
        if record["request_id"] == request_id:
            return dict(record)
    raise AssertionError(f"no audit line for {request_id}")

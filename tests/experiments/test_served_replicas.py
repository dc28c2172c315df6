"""Two real server processes sharing a real Redis and one presets directory: feedback
that reaches the other replica counts to the right arm; weights changed on disk take
effect without a restart; a bad experiments file is refused at start and, on a hot
reload, logged while the previous experiments stay in force."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from features.redis_server import RedisServer
from server_process import ServerProcess, start_server

from flux_client import FluxModelClient

from .prometheus_server import PROMETHEUS, PrometheusServer
from .served import EXPERIMENT, generate, render_presets, set_weights, wait_for


@pytest.fixture(scope="module")
def replicas(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("replicas")
    presets = root / "presets"
    render_presets(presets)
    redis = RedisServer(root)
    redis.start()
    args = ["--presets-dir", str(presets), "--redis-url", redis.url]
    started: list[ServerProcess] = []
    try:
        for _ in range(2):
            started.append(start_server(tiny_flux_dir, root, args, metrics_port=False))
        for process in started:
            process.wait_ready()
        a, b = (httpx.Client(base_url=p.url, timeout=120) for p in started)
        yield {"a": a, "b": b, "processes": started, "presets": presets, "root": root}
        a.close()
        b.close()
    finally:
        for process in started:
            process.stop()
        redis.kill()


def _arms(client: httpx.Client) -> dict[str, dict[str, Any]]:
    (experiment,) = client.get("/experiments").json()["experiments"]
    assert experiment["name"] == EXPERIMENT
    return {arm["name"]: arm for arm in experiment["arms"]}


def test_feedback_on_the_other_replica_counts_to_the_arm(replicas: dict[str, Any]) -> None:
    a, b = replicas["a"], replicas["b"]
    served: dict[str, str] = {}
    for i in range(30):
        body = generate(a, f"shared-{i}").json()
        served[body["request_id"]] = body["experiment"]["arm"]
    for request_id, arm in served.items():
        response = b.post("/feedback", json={"request_id": request_id, "event": "like"})
        assert response.status_code == 200, response.text
        assert response.json()["arm"] == arm and response.json()["counted"]
    # Once per request and event, whichever replica hears it again.
    again = a.post("/feedback", json={"request_id": next(iter(served)), "event": "like"})
    assert again.status_code == 200 and again.json()["counted"] is False
    served_by_a, liked_on_b = _arms(a), _arms(b)
    for arm in ("control", "impressionist", "ink"):
        expected = sum(1 for got in served.values() if got == arm)
        assert served_by_a[arm]["requests"] == expected
        assert liked_on_b[arm]["events"].get("like", 0) == expected
        assert liked_on_b[arm]["requests"] == 0  # b served none itself
    # The SDK, over gRPC, to the other replica.
    process_b = replicas["processes"][1]
    with FluxModelClient("127.0.0.1", process_b.grpc_port, timeout=30) as sdk:
        done = sdk.feedback(next(iter(served)), "download")
    assert done.counted and done.arm == served[next(iter(served))]


def test_the_report_from_prometheus_sums_both_replicas(
    replicas: dict[str, Any], tmp_path: Path
) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("needs Debian's prometheus (apt-get install prometheus)")
    a_arms, b_arms = _arms(replicas["a"]), _arms(replicas["b"])
    requests = {arm: a_arms[arm]["requests"] + b_arms[arm]["requests"] for arm in a_arms}
    liked = {
        arm: a_arms[arm]["events"].get("like", 0) + b_arms[arm]["events"].get("like", 0)
        for arm in a_arms
    }
    targets = [f"127.0.0.1:{p.http_port}" for p in replicas["processes"]]
    prometheus = PrometheusServer(tmp_path, targets)
    prometheus.start()
    try:

        def scraped() -> bool:
            total = prometheus.query("sum(fluxserve_experiment_requests_total)")
            likes = prometheus.query('sum(fluxserve_experiment_feedback_total{event="like"})')
            return bool(total and likes) and (
                float(total[0]["value"][1]),
                float(likes[0]["value"][1]),
            ) == (sum(requests.values()), sum(liked.values()))

        wait_for(scraped, "a scrape of both replicas", timeout=60)
        out = subprocess.run(
            [sys.executable, "-m", "flux_client", "experiments", "--prometheus",
             prometheus.url, "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        prometheus.kill()
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)["experiments"]
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert list(arms) == ["control", "impressionist", "ink"]
    for name, arm in arms.items():
        assert arm["requests"] == requests[name]
        assert arm["events"]["like"]["count"] == liked[name]


def test_weights_changed_on_disk_take_effect_without_a_restart(replicas: dict[str, Any]) -> None:
    a, b = replicas["a"], replicas["b"]
    set_weights(replicas["presets"], [0, 100, 0])
    for client in (a, b):

        def reloaded(c: httpx.Client = client) -> bool:
            return [arm["weight"] for arm in _arms(c).values()] == [0, 100, 0]

        wait_for(reloaded, "the new weights")
    for i in range(10):  # every user is in the impressionist arm now, on both replicas
        for client in (a, b):
            assert generate(client, f"moved-{i}").json()["experiment"]["arm"] == "impressionist"


def test_a_bad_experiments_file_is_logged_and_the_previous_one_kept(
    replicas: dict[str, Any],
) -> None:
    a = replicas["a"]
    weights = [arm["weight"] for arm in _arms(a).values()]
    set_weights(replicas["presets"], [10, 10, 10])  # sums to 30
    process = replicas["processes"][0]

    def refused() -> bool:
        a.get("/experiments")  # a request makes the server look at the directory
        return "presets not reloaded" in process.log() and "sum to 100" in process.log()

    wait_for(refused, "the refused reload in the log")
    assert [arm["weight"] for arm in _arms(a).values()] == weights
    assert generate(a, "still-served").json()["experiment"]["name"] == EXPERIMENT


def test_a_bad_experiments_directory_is_refused_at_start(
    tiny_flux_dir: Path, tmp_path: Path
) -> None:
    presets = tmp_path / "presets"
    render_presets(presets)
    experiments = json.loads((presets / "_experiments.json").read_text("utf-8"))
    experiments["experiments"][0]["arms"][1]["preset"] = "cubist"
    (presets / "_experiments.json").write_text(json.dumps(experiments), "utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "flux_server", "--model", str(tiny_flux_dir), "--http-port",
         "0", "--grpc-port", "0", "--presets-dir", str(presets)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "_experiments.json" in line]
    assert len(lines) == 1 and "cubist" in lines[0], out.stderr

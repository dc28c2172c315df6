"""The experiments report, from a replica's metrics and from a real Prometheus summing
two replicas."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from features.metric_names import EXPERIMENT_METRICS
from prometheus_client import generate_latest, start_http_server

from flux_client.experiment_report import (
    build_report,
    counts_from_prometheus,
    gather_prometheus,
    prometheus_queries,
    render_json,
    render_table,
)
from flux_client.experiment_stats import histogram_quantile
from flux_client.experiments import Experiment
from flux_server.experiments.assignment import assign
from flux_server.experiments.counts import experiments_counts
from flux_server.metrics import Metrics

from .prometheus_server import PROMETHEUS, PrometheusServer

EXPERIMENT = Experiment.model_validate(
    {
        "name": "impressionist-filter",
        "preset": "realistic",
        "audience": {"header": "X-Customer-Group", "values": ["beta", "vip"]},
        "arms": [
            {"name": "control", "preset": "realistic", "weight": 50},
            {"name": "impressionist", "preset": "impressionist", "weight": 30},
            {"name": "ink", "preset": "水墨", "weight": 20},
        ],
        "salt": "2026-12",
    }
)
LIKES = {"control": 0.2, "impressionist": 0.45, "ink": 0.2}
"""Each arm's like rate in the simulation: users like every n-th image of theirs."""


def serve_users(metrics: Metrics, users: range) -> dict[str, int]:
    """Users request an image each; a share of each arm's users likes it."""
    metrics.experiments.set_experiments([EXPERIMENT])
    served: dict[str, int] = {}
    for i in users:
        headers = {"X-Customer-Group": "beta", "X-User-Id": f"user-{i}"}
        got = assign([EXPERIMENT], "realistic", None, headers)
        assert got is not None
        seconds = {"control": 0.3, "impressionist": 0.7, "ink": 2.0}[got.arm]
        metrics.experiments.observe_request(got.experiment, got.arm, seconds, seconds / 2, 1)
        served[got.arm] = served.get(got.arm, 0) + 1
        # Deterministic likes: the k-th request of an arm is liked when the running
        # rate is below the arm's target.
        n = served[got.arm]
        if math.floor(n * LIKES[got.arm]) > math.floor((n - 1) * LIKES[got.arm]):
            metrics.experiments.count_feedback(got.experiment, got.arm, "like", 1)
    return served


def test_replica_counts_make_the_report() -> None:
    metrics = Metrics()
    served = serve_users(metrics, range(300))
    counts = experiments_counts([EXPERIMENT], metrics.registry)
    report = build_report(counts)
    (experiment,) = report["experiments"]
    arms = {arm["name"]: arm for arm in experiment["arms"]}
    assert [a["name"] for a in experiment["arms"]] == ["control", "impressionist", "ink"]
    assert {name: arm["requests"] for name, arm in arms.items()} == served
    assert 120 < served["control"] < 180 and 60 < served["impressionist"] < 120
    assert arms["ink"]["gpu_seconds_per_image"] == pytest.approx(1.0)
    # All of ink's requests took 2 s, in the (1, 2.5] bucket: p50 interpolates in it.
    assert arms["ink"]["latency_p50_seconds"] == pytest.approx(1.75)
    assert arms["control"]["latency_p95_seconds"] == pytest.approx(0.25 + 0.25 * 0.95)
    assert arms["impressionist"]["events"]["like"]["rate"] == pytest.approx(0.45, abs=0.01)
    verdicts = {c["arm"]: c["verdict"] for c in experiment["comparisons"]}
    assert verdicts == {"impressionist": "higher", "ink": "no_significant_difference"}
    table = render_table(report)
    assert "impressionist-filter" in table and "higher than control" in table
    assert "水墨" in table
    parsed = json.loads(render_json(report))
    comparison = parsed["experiments"][0]["comparisons"][0]
    assert {"arm", "event", "p_value", "difference", "ci95", "verdict"} <= set(comparison)


def test_a_fresh_experiment_says_not_enough_data() -> None:
    metrics = Metrics()
    serve_users(metrics, range(12))
    report = build_report(experiments_counts([EXPERIMENT], metrics.registry))
    assert {c["verdict"] for c in report["experiments"][0]["comparisons"]} == {"not_enough_data"}
    assert "not enough data yet" in render_table(report)


def test_experiment_metrics_are_exported() -> None:
    metrics = Metrics()
    serve_users(metrics, range(20))
    text = generate_latest(metrics.registry).decode()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert exported >= EXPERIMENT_METRICS
    # A reload with new weights replaces the arms' description.
    changed = EXPERIMENT.model_copy(
        update={
            "arms": [
                a.model_copy(update={"weight": w})
                for a, w in zip(EXPERIMENT.arms, (40, 40, 20), strict=True)
            ]
        }
    )
    metrics.experiments.set_experiments([changed])
    text = generate_latest(metrics.registry).decode()
    assert 'weight="40"' in text and 'weight="50"' not in text


@pytest.fixture
def two_replicas_and_prometheus(tmp_path: Path) -> Iterator[tuple[PrometheusServer, list[Metrics]]]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("needs Debian's prometheus (apt-get install prometheus)")
    from features.redis_server import free_port

    replicas, servers, targets = [Metrics(), Metrics()], [], []
    for metrics in replicas:
        port = free_port()
        server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
        servers.append(server)
        targets.append(f"127.0.0.1:{port}")
    prometheus = PrometheusServer(tmp_path, targets)
    prometheus.start()
    try:
        yield prometheus, replicas
    finally:
        prometheus.kill()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_prometheus_report_sums_the_replicas(
    two_replicas_and_prometheus: tuple[PrometheusServer, list[Metrics]],
) -> None:
    prometheus, replicas = two_replicas_and_prometheus
    served_a = serve_users(replicas[0], range(0, 150))
    served_b = serve_users(replicas[1], range(150, 300))
    deadline = time.monotonic() + 60
    while True:  # until a scrape of both replicas carries every request
        total = prometheus.query("sum(fluxserve_experiment_requests_total)")
        events = prometheus.query(prometheus_queries()["events"])
        if total and float(total[0]["value"][1]) == 300 and len(events) == 3:
            break
        assert time.monotonic() < deadline, "prometheus never saw both replicas"
        time.sleep(0.2)
    counts = gather_prometheus(prometheus.url)
    (experiment,) = counts.experiments
    assert [arm.name for arm in experiment.arms] == ["control", "impressionist", "ink"]
    assert experiment.arms[2].preset == "水墨" and experiment.arms[0].weight == 50
    for arm in experiment.arms:
        assert arm.requests == served_a.get(arm.name, 0) + served_b.get(arm.name, 0)
    # The quantile computed here is the one Prometheus computes from the same buckets.
    promql = (
        "histogram_quantile(0.95, sum by (arm, le) "
        "(fluxserve_experiment_request_duration_seconds_bucket))"
    )
    theirs = {s["metric"]["arm"]: float(s["value"][1]) for s in prometheus.query(promql)}
    for arm in experiment.arms:
        buckets = [(float(le), c) for le, c in arm.duration_buckets.items()]
        assert histogram_quantile(0.95, buckets) == pytest.approx(theirs[arm.name])
    report = build_report(counts)
    verdicts = {c["arm"]: c["verdict"] for c in report["experiments"][0]["comparisons"]}
    assert verdicts["impressionist"] == "higher"


def test_counts_from_prometheus_vectors() -> None:
    def sample(value: float, **labels: str) -> dict[str, Any]:
        return {"metric": {"experiment": "e", **labels}, "value": [0, str(value)]}

    counts = counts_from_prometheus(
        {
            "arms": [
                sample(1, arm="b", preset="p2", position="1", weight="40"),
                sample(1, arm="a", preset="p1", position="0", weight="60"),
            ],
            "requests": [sample(10, arm="a"), sample(5, arm="b"), sample(2, arm="gone")],
            "events": [sample(3, arm="a", event="like")],
            "buckets": [sample(10, arm="a", le="+Inf"), sample(4, arm="a", le="1.0")],
        }
    )
    arms = counts.experiments[0].arms
    assert [a.name for a in arms] == ["a", "b", "gone"]  # control first, unknown last
    assert arms[0].events == {"like": 3} and arms[0].duration_buckets == {"+Inf": 10, "1.0": 4}
    assert prometheus_queries("7d")["requests"] == (
        "sum by (experiment, arm) (increase(fluxserve_experiment_requests_total[7d]))"
    )


def test_report_from_a_server_over_http() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flux_client.experiment_report import report

    metrics = Metrics()
    serve_users(metrics, range(300))
    body = experiments_counts([EXPERIMENT], metrics.registry).model_dump_json().encode()
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            status = 200 if self.path == "/experiments" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if status == 200 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        printed = json.loads(
            report(server_url=url, headers={"Authorization": "Bearer k"}, as_json=True)
        )
        assert printed == json.loads(
            render_json(build_report(experiments_counts([EXPERIMENT], metrics.registry)))
        )
        assert seen == ["Bearer k"]
        assert report(server_url=url).startswith("experiment impressionist-filter")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="server or a Prometheus"):
        report()


def test_table_columns_line_up_with_wide_characters() -> None:
    import unicodedata

    metrics = Metrics()
    serve_users(metrics, range(60))
    lines = render_table(build_report(experiments_counts([EXPERIMENT], metrics.registry)))
    rows = [line for line in lines.splitlines() if " 50 " in line or " 20 " in line][:2]

    def column_of(line: str, text: str) -> int:
        before = line[: line.index(text)]
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before)

    assert "水墨" in rows[1]
    assert column_of(rows[0], " 50 ") == column_of(rows[1], " 20 ")

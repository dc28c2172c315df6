"""Canary analysis against a real Prometheus scraping real ``python -m flux_server``
processes on the tiny model: one stable (v1) and one canary (v2).

Each scrape target carries the pod labels the operator renders for that side, and the job
relabels them with the PodMonitor's own relabelings (``deploy/monitoring/podmonitor.yaml``)
plus the ``namespace`` relabeling the Prometheus Operator adds to every PodMonitor: the
series the built-in queries read are the ones a cluster would have.

Every series exists before Prometheus starts (one request of each kind), so all series of a
target share their sample times and a ratio of rates is exact: 5xx over all requests,
counting only what was sent after the first scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_process import PrometheusProcess, prometheus_binary, start_prometheus
from server_process import ServerProcess, free_port, start_server

from flux_operator.prometheus import measure
from flux_operator.reconcile.analysis import (
    BUILTIN_QUERIES,
    metric_query,
    release_label,
    round_summary,
)
from flux_operator.render import (
    Owner,
    common_labels,
    render_all,
    render_canary_deployment,
    render_stable_deployment,
)
from flux_operator.spec import CanaryAnalysis, CanaryMetric, FluxDeployment

ROOT = Path(__file__).resolve().parents[2]
PODMONITOR = ROOT / "deploy" / "monitoring" / "podmonitor.yaml"
EXAMPLE = Path(__file__).parent / "examples" / "good" / "minimal-hub.yaml"
NAME, NAMESPACE = "flux-dev", "studio"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Wider than the test's life: the rate covers every scrape, so the ratios are exact.
INTERVAL = "10m"
MIN_SAMPLES = 8

# What each side answers after the first scrape: (2xx, 5xx, 422).
TRAFFIC = {"v1": (1, 2, 0), "v2": (2, 1, 1)}


# --- units that need no Prometheus ----------------------------------------------------------


def test_release_label_is_the_label_the_pods_carry() -> None:
    owner = Owner(name=NAME)
    for release in ("v1.4.2", "v1.4.2_rc.1", "x" * 100, "1.0-"):
        assert release_label(release) == common_labels(owner, release)["app.kubernetes.io/version"]


def test_queries_are_filled_in_and_escaped() -> None:
    query = metric_query(
        CanaryMetric(name="x", query='up{release="{{release}}",ns="{{namespace}}"}', max=1),
        release="v2",
        namespace='we"ird',
        name=NAME,
        interval="1m",
    )
    assert query == 'up{release="v2",ns="we\\"ird"}'
    builtin = metric_query(
        CanaryMetric(name="error-ratio", max=0.1),
        release="v2",
        namespace=NAMESPACE,
        name=NAME,
        interval="2m",
    )
    assert "{{" not in builtin and "[2m]" in builtin and 'fluxdeployment="flux-dev"' in builtin
    assert set(BUILTIN_QUERIES) == {"error-ratio", "p95-latency-seconds"}


def test_unreachable_prometheus_is_inconclusive() -> None:
    analysis = CanaryAnalysis(prometheus_url=f"http://127.0.0.1:{free_port()}", interval="1m")
    round_ = measure(analysis, release="v2", namespace=NAMESPACE, name=NAME, now=NOW)
    assert [m.metric for m in round_] == ["error-ratio", "p95-latency-seconds"]
    for m in round_:
        assert m.outcome == "Inconclusive" and m.value is None
        assert (
            m.reason is not None
            and "unreachable" in m.reason
            and str(analysis.prometheus_url) in m.reason
        )


# --- against a real Prometheus --------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    binary = prometheus_binary()
    if binary is None:
        pytest.skip(
            "no prometheus binary (/usr/bin/prometheus): `apt-get install prometheus` "
            "or `make tools` to run the analysis tests against a real Prometheus"
        )
    return binary


def _pod_labels(release: str, track: str) -> dict[str, str]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["release"] = release
    spec = FluxDeployment.model_validate(doc).spec
    owner = Owner(name=NAME, namespace=NAMESPACE)
    deployment = next(o for o in render_all(owner, spec) if o["kind"] == "Deployment")
    if track == "canary":
        deployment = render_canary_deployment(deployment, replicas=1)
    else:
        deployment = render_stable_deployment(deployment, replicas=1)
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _scrape_job(targets: dict[str, tuple[ServerProcess, dict[str, str]]]) -> dict[str, Any]:
    """One job as the Prometheus Operator would generate it from the PodMonitor, with
    static targets standing in for Kubernetes service discovery."""
    monitor = yaml.safe_load(PODMONITOR.read_text())
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabel = [
        {"source_labels": r["sourceLabels"], "target_label": r["targetLabel"]}
        for r in endpoint["relabelings"]
    ]
    relabel.append({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"})
    groups = []
    for server, pod_labels in targets.values():
        labels = {
            "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", key): value
            for key, value in pod_labels.items()
        }
        labels["__meta_kubernetes_namespace"] = NAMESPACE
        groups.append({"targets": [f"127.0.0.1:{server.metrics_port}"], "labels": labels})
    return {
        "job_name": f"{NAMESPACE}/fluxserve",
        "metrics_path": endpoint["path"],
        "static_configs": groups,
        "relabel_configs": relabel,
    }


def _send(server: ServerProcess, ok: int, errors: int, invalid: int) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(ok):
            r = client.post("/generate", json={"prompt": "a lighthouse", "seed": 1})
            assert r.status_code == 200, r.text
        for _ in range(errors):
            # VQA is off in these servers: 501, a server-side error of this release.
            r = client.post("/vqa", files={"image": b"x"}, data={"question": "what?"})
            assert r.status_code == 501, r.text
        for _ in range(invalid):
            r = client.post("/generate", json={"prompt": "a lighthouse", "width": 17})
            assert r.status_code == 422, r.text


def _buckets(server: ServerProcess) -> dict[float, float]:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
    totals: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "fluxserve_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                totals[le] = totals.get(le, 0.0) + sample.value
    return totals


def _histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL's histogram_quantile over cumulative buckets (the oracle for the test)."""
    bounds = sorted(buckets)
    count = buckets[math.inf]
    rank = q * count
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == math.inf:
                return previous_bound
            in_bucket = buckets[bound] - previous_count
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, buckets[bound]
    raise AssertionError("no +Inf bucket")


def _until(prometheus: PrometheusProcess, promql: str) -> None:
    """Poll until the query returns a series."""

    def answered() -> list[dict[str, Any]] | None:
        return prometheus.query(promql) or None

    prometheus.wait_for(promql, answered)


@pytest.fixture(scope="module")
def scene(
    prometheus_bin: str, tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("canary-analysis")
    servers = {
        release: start_server(tiny_flux_dir, work, args=["--release", release])
        for release in TRAFFIC
    }
    prometheus: PrometheusProcess | None = None
    try:
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():
            _send(server, 1, 1, 1)  # every series exists before the first scrape
        before = {release: _buckets(server) for release, server in servers.items()}
        targets = {
            "v1": (servers["v1"], _pod_labels("v1", "stable")),
            "v2": (servers["v2"], _pod_labels("v2", "canary")),
        }
        prometheus = start_prometheus(prometheus_bin, work, [_scrape_job(targets)])
        for release in TRAFFIC:
            _until(prometheus, f'fluxserve_requests_total{{release="{release}"}}')
        for release, (ok, errors, invalid) in TRAFFIC.items():
            _send(servers[release], ok, errors, invalid)
        for release, counts in TRAFFIC.items():
            total = 3 + sum(counts)
            _until(prometheus, f'sum(fluxserve_requests_total{{release="{release}"}}) == {total}')
        # rate() extrapolates towards zero only over a short sampled interval; past a few
        # scrapes every series of a target is extrapolated alike and the ratios are exact.
        _until(
            prometheus,
            f"min(count_over_time(fluxserve_requests_total[{INTERVAL}])) >= {MIN_SAMPLES}",
        )
        after = {release: _buckets(server) for release, server in servers.items()}
        yield {"prometheus": prometheus, "before": before, "after": after}
    finally:
        if prometheus is not None:
            prometheus.stop()
        for server in servers.values():
            server.stop()


def _analysis(scene: dict[str, Any], *metrics: CanaryMetric) -> CanaryAnalysis:
    return CanaryAnalysis(
        prometheus_url=scene["prometheus"].url, interval=INTERVAL, metrics=list(metrics)
    )


def test_the_podmonitor_relabelling_puts_release_track_and_name_on_every_series(
    scene: dict[str, Any],
) -> None:
    series = scene["prometheus"].query("fluxserve_requests_total")
    seen = {
        (s["metric"]["release"], s["metric"]["track"], s["metric"]["fluxdeployment"],
         s["metric"]["namespace"])
        for s in series
    }  # fmt: skip
    assert seen == {("v1", "stable", NAME, NAMESPACE), ("v2", "canary", NAME, NAMESPACE)}


def test_builtin_metrics_measure_the_canary_release_only(scene: dict[str, Any]) -> None:
    round_ = measure(_analysis(scene), release="v2", namespace=NAMESPACE, name=NAME, now=NOW)
    by_name = {m.metric: m for m in round_}
    ok, errors, invalid = TRAFFIC["v2"]
    # 5xx over every request; the 422 counts as a request, not as an error.
    assert by_name["error-ratio"].value == pytest.approx(errors / (ok + errors + invalid))
    # The default bound is max 0.05: a quarter of the requests failing fails it.
    assert (by_name["error-ratio"].outcome, by_name["error-ratio"].bound()) == (
        "Failed",
        "max 0.05",
    )
    delta = {
        le: scene["after"]["v2"][le] - scene["before"]["v2"][le] for le in scene["after"]["v2"]
    }
    expected_p95 = _histogram_quantile(0.95, delta)
    assert by_name["p95-latency-seconds"].value == pytest.approx(expected_p95)
    assert by_name["p95-latency-seconds"].outcome == "Passed"


def test_a_bound_the_canary_passes_fails_it(scene: dict[str, Any]) -> None:
    analysis = _analysis(scene, CanaryMetric(name="error-ratio", max=0.02))
    (m,) = measure(analysis, release="v2", namespace=NAMESPACE, name=NAME, now=NOW)
    assert (m.outcome, m.bound()) == ("Failed", "max 0.02")
    assert m.value == pytest.approx(0.25)


def test_a_custom_query_selects_one_release_by_its_labels(scene: dict[str, Any]) -> None:
    stable_errors = CanaryMetric(
        name="stable-error-ratio",
        query='sum(rate(fluxserve_requests_total{release="{{release}}",track="stable",'
        'namespace="{{namespace}}",code=~"5.."}[{{interval}}]))'
        ' / sum(rate(fluxserve_requests_total{release="{{release}}"}[{{interval}}]))',
        max=1,
    )
    (m,) = measure(
        _analysis(scene, stable_errors), release="v1", namespace=NAMESPACE, name=NAME, now=NOW
    )
    ok, errors, invalid = TRAFFIC["v1"]
    assert m.value == pytest.approx(errors / (ok + errors + invalid))


def test_a_query_without_data_is_inconclusive(scene: dict[str, Any]) -> None:
    for release, namespace in (("v2", "elsewhere"), ("v1", NAMESPACE), ("v9", NAMESPACE)):
        round_ = measure(_analysis(scene), release=release, namespace=namespace, name=NAME, now=NOW)
        for m in round_:
            assert m.outcome == "Inconclusive", (release, namespace, m)
            assert m.reason is not None and m.reason.startswith("no data for ")


def test_a_query_that_is_not_one_number_is_inconclusive(scene: dict[str, Any]) -> None:
    many = CanaryMetric(name="many", query="fluxserve_requests_total", max=1)
    matrix = CanaryMetric(name="matrix", query="fluxserve_requests_total[1m]", max=1)
    refused = CanaryMetric(name="refused", query="rate(fluxserve_requests_total)", max=1)
    round_ = measure(
        _analysis(scene, many, matrix, refused),
        release="v2",
        namespace=NAMESPACE,
        name=NAME,
        now=NOW,
    )
    reasons = {m.metric: m.reason for m in round_}
    assert all(m.outcome == "Inconclusive" for m in round_)
    assert "series, not one number" in str(reasons["many"])
    assert reasons["matrix"] == "the query returns a matrix, not one number"
    assert "refused the query: bad_data" in str(reasons["refused"])


def test_an_answer_of_an_unknown_shape_is_inconclusive() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "vector(1)" in request.url.params["query"]:
            return httpx.Response(
                200,
                json={"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}},
            )
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector"}})

    analysis = CanaryAnalysis(
        prometheus_url="http://prometheus.invalid:9090",
        metrics=[
            CanaryMetric(name="odd", query="up", max=1),
            CanaryMetric(name="scalar", query="vector(1)", max=1),
        ],
    )
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        odd, scalar = measure(
            analysis, release="v2", namespace=NAMESPACE, name=NAME, now=NOW, client=client
        )
    assert odd.outcome == "Inconclusive" and "unknown shape" in str(odd.reason)
    assert (scalar.outcome, scalar.value) == ("Passed", 1.0)
    assert round_summary([odd, scalar]) == "odd=none (max 1) Inconclusive, scalar=1 (max 1) Passed"


def test_the_dashboard_shows_each_track_beside_the_other(scene: dict[str, Any]) -> None:
    import json

    dashboard = json.loads((ROOT / "deploy/monitoring/grafana-dashboard.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Error ratio by track"]
    (target,) = panel["targets"]
    expr = (
        target["expr"]
        .replace("$__rate_interval", INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$pod", ".*")
    )
    ratios = {
        (s["metric"]["track"], s["metric"]["release"]): float(s["value"][1])
        for s in scene["prometheus"].query(expr)
    }
    assert ratios.keys() == {("stable", "v1"), ("canary", "v2")}
    for (_, release), ratio in ratios.items():
        ok, errors, invalid = TRAFFIC[release]
        assert ratio == pytest.approx(errors / (ok + errors + invalid))

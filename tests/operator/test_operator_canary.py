"""Canary releases: the real operator (kopf) against the Kubernetes API emulator.

The test plays the Deployment controller (it writes the Deployments' status) and the
HPA controller (``status.desiredReplicas``). Analysis asks a stub of Prometheus's HTTP API
(``/api/v1/query``) that answers each query with the number the test sets: what is tested
here is what the operator does with the answers (hold, advance, abort, promote). The
contract with a real Prometheus scraping real servers (the built-in queries, the labels
the PodMonitor relabels) is tested in ``test_analysis_prometheus.py``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec, condition

from flux_operator.cli import main as cli_main

IMAGE = "ghcr.io/acme/fluxserve-server"
GATEWAY = {"parentRefs": [{"name": "inference-gw", "namespace": "infra"}]}
TRACK = "fluxserve.dev/track"


class StubPrometheus:
    """``/api/v1/query`` answering one number per built-in metric (None: no data)."""

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {"error-ratio": 0.0, "p95-latency-seconds": 2.0}
        self.queries: list[str] = []
        self.url = ""

    async def query(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        promql = request.query.get("query", "")
        self.queries.append(promql)
        metric = "p95-latency-seconds" if "histogram_quantile" in promql else "error-ratio"
        value = self.values[metric]
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return aiohttp.web.json_response(body)


@pytest.fixture
async def prometheus() -> AsyncIterator[StubPrometheus]:
    stub = StubPrometheus()
    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/query", stub.query)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def canary_spec(
    steps: list[dict[str, Any]],
    *,
    analysis: dict[str, Any] | None = None,
    max_surge: int = 1,
    gateway: bool = False,
    **changes: Any,
) -> dict[str, Any]:
    canary: dict[str, Any] = {"maxSurge": max_surge, "steps": steps}
    if analysis is not None:
        canary["analysis"] = {"interval": "10s", "failureLimit": 0, **analysis}
    rollout = {"progressDeadlineSeconds": 900, "strategy": "Canary", "canary": canary}
    spec = base_spec(rollout=rollout, replicas=4)
    del spec["autoscaling"]
    if gateway:
        spec["gateway"] = GATEWAY
    spec.update(changes)
    return spec


async def must(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    found = await cluster.get(kind, name)
    assert found is not None, f"{kind} {name}"
    return found


def image(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def serve(cluster: Cluster, name: str) -> None:
    """Playing the Deployment controller: every pod of the current template is ready."""
    deployment = await cluster.get("Deployment", name)
    assert deployment is not None, name
    pods = int(deployment["spec"].get("replicas", 1))
    await cluster.patch(
        "Deployment",
        name,
        {
            "status": {
                "observedGeneration": int(deployment["metadata"].get("generation", 1)),
                "replicas": pods,
                "readyReplicas": pods,
                "updatedReplicas": pods,
                "availableReplicas": pods,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }
        },
    )


async def running(cluster: Cluster, name: str, release: str) -> dict[str, Any]:
    """A Deployment that runs ``release`` (waited for)."""

    async def check() -> dict[str, Any] | None:
        deployment = await cluster.get("Deployment", name)
        return deployment if image(deployment) == f"{IMAGE}:{release}" else None

    return await cluster.wait_for(check, f"{name} running {release}")


async def ready_on(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    """A new FluxDeployment whose first revision is served."""
    await cluster.create_fd(name, spec)
    await running(cluster, name, spec["release"])
    await serve(cluster, name)
    await cluster.wait_status(name, lambda s: s.get("phase") == "Ready", "phase Ready")


async def canary_serving(cluster: Cluster, name: str, release: str) -> dict[str, Any]:
    """``NAME-canary`` runs ``release`` and its pods are ready; the first step's clock runs."""
    await cluster.update_spec(name, release=release)
    canary = await running(cluster, f"{name}-canary", release)
    await serve(cluster, f"{name}-canary")
    await cluster.wait_status(
        name,
        lambda s: (s.get("canary") or {}).get("phase") not in (None, "Starting"),
        "the canary's first step running",
    )
    return canary


def weights(route: dict[str, Any] | None) -> dict[str, int]:
    assert route is not None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: ref["weight"] for ref in refs}


async def route_weights(cluster: Cluster, name: str, expected: dict[str, int]) -> None:
    async def check() -> bool:
        return weights(await cluster.get("HTTPRoute", name)) == expected

    await cluster.wait_for(check, f"route weights {expected}")


async def test_v2_is_promoted_through_every_step_behind_a_gateway_and_v3_aborted(
    cluster: Cluster, operator: OperatorHandle, prometheus: StubPrometheus
) -> None:
    # Step 1 needs a round made after it began: the next, 10s (the least interval) on.
    steps = [{"weight": 25, "pause": "5s"}, {"weight": 50, "pause": "1s"}]
    spec = canary_spec(steps, analysis={"prometheusUrl": prometheus.url}, gateway=True)
    await ready_on(cluster, "flux", spec)
    stable = await must(cluster, "Deployment", "flux")
    assert stable is not None
    assert stable["spec"]["template"]["metadata"]["labels"][TRACK] == "stable"
    await route_weights(cluster, "flux", {"flux-stable": 100, "flux-canary": 0})
    for track in ("stable", "canary"):
        service = await cluster.get("Service", f"flux-{track}")
        assert service is not None and service["spec"]["selector"][TRACK] == track
    shared = await cluster.get("Service", "flux")
    assert shared is not None and TRACK not in shared["spec"]["selector"]

    canary = await canary_serving(cluster, "flux", "v2")
    assert canary["spec"]["template"]["metadata"]["labels"][TRACK] == "canary"
    assert canary["spec"]["replicas"] == 1  # 25% of 4 pods
    stable = await must(cluster, "Deployment", "flux")
    assert image(stable) == f"{IMAGE}:v1.4.1" and stable["spec"]["replicas"] == 4
    await route_weights(cluster, "flux", {"flux-stable": 75, "flux-canary": 25})
    status = (await must(cluster, "FluxDeployment", "flux"))["status"]
    assert status["currentRelease"] == "v1.4.1"
    assert status["canary"]["summary"] == "v2@25% Progressing"

    # Step 1 after the pause and a passing round: half the traffic, maxSurge 1 extra pod.
    await route_weights(cluster, "flux", {"flux-stable": 50, "flux-canary": 50})
    await cluster.wait_event("CanaryAdvanced", "step 1")

    async def split() -> bool:
        stable = await must(cluster, "Deployment", "flux")
        canary = await cluster.get("Deployment", "flux-canary")
        return bool(
            stable and canary and (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 2)
        )

    await cluster.wait_for(split, "3 stable and 2 canary pods")
    # After the last step (and a round since it began): promoted; NAME rolls to v2.
    await running(cluster, "flux", "v2")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Promoting", "promoting"
    )
    assert await cluster.get("Deployment", "flux-canary") is not None
    # NAME rolls within the surge budget the canary's 2 pods leave (3 + 2 = 4 + maxSurge
    # 1): no pod of its own on top, one replaced at a time.
    rolling = await must(cluster, "Deployment", "flux")
    assert rolling["spec"]["replicas"] == 3
    assert rolling["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    await serve(cluster, "flux")

    async def canary_gone() -> bool:
        return await cluster.get("Deployment", "flux-canary") is None

    await cluster.wait_for(canary_gone, "the canary Deployment removed")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Promoted", "promoted"
    )
    assert status["currentRelease"] == "v2" and status["phase"] == "Ready"
    promoted = await must(cluster, "Deployment", "flux")
    assert promoted["spec"]["replicas"] == 4
    assert promoted["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    outcomes = [(e["release"], e["outcome"]) for e in status["history"]]
    assert outcomes == [("v1.4.1", "Superseded"), ("v2", "Available")]
    await route_weights(cluster, "flux", {"flux-stable": 100, "flux-canary": 0})
    assert all('release="v2"' in q for q in prometheus.queries)

    # v3 fails its error ratio: aborted, all traffic back on v2, which never stopped serving.
    prometheus.values["error-ratio"] = 0.5
    await canary_serving(cluster, "flux", "v3")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Aborted", "v3 aborted"
    )
    assert "error-ratio = 0.5, bound max 0.05" in condition(status, "RolledBack")["message"]
    await route_weights(cluster, "flux", {"flux-stable": 100, "flux-canary": 0})
    assert image(await cluster.get("Deployment", "flux")) == f"{IMAGE}:v2"
    assert operator.crashed() is None


async def test_a_failing_metric_aborts_v3_while_v2_keeps_serving(
    cluster: Cluster, operator: OperatorHandle, prometheus: StubPrometheus
) -> None:
    spec = canary_spec(
        [{"weight": 25, "pause": "1h"}],
        analysis={"prometheusUrl": prometheus.url},
        release="v2",
    )
    await ready_on(cluster, "flux", spec)
    prometheus.values["error-ratio"] = 0.5
    await cluster.update_spec("flux", release="v3")
    await running(cluster, "flux-canary", "v3")
    await serve(cluster, "flux-canary")

    status = await cluster.wait_status(
        "flux", lambda s: (s.get("canary") or {}).get("phase") == "Aborted", "the abort"
    )
    rolled_back = condition(status, "RolledBack")
    assert rolled_back["status"] == "True" and rolled_back["reason"] == "CanaryAborted"
    assert "error-ratio = 0.5, bound max 0.05" in rolled_back["message"]
    outcomes = [(e["release"], e["outcome"]) for e in status["history"]]
    assert outcomes == [("v2", "Available"), ("v3", "Failed")]
    assert status["currentRelease"] == "v2" and status["phase"] == "RolledBack"
    event = await cluster.wait_event("CanaryAborted", "error-ratio = 0.5")
    assert event["type"] == "Warning"

    async def canary_gone() -> bool:
        return await cluster.get("Deployment", "flux-canary") is None

    await cluster.wait_for(canary_gone, "the canary Deployment removed")
    stable = await must(cluster, "Deployment", "flux")
    assert image(stable) == f"{IMAGE}:v2" and stable["spec"]["replicas"] == 4
    assert await cluster.get("HTTPRoute", "flux") is None  # no gateway, no route
    # Not retried: periodic passes (every second here) start no canary of v3 again.
    rounds = len(prometheus.queries)
    await asyncio.sleep(2.5)
    assert await cluster.get("Deployment", "flux-canary") is None
    assert len(prometheus.queries) == rounds
    # A spec change is a new attempt.
    prometheus.values["error-ratio"] = 0.0
    await cluster.update_spec("flux", release="v3.1")
    await running(cluster, "flux-canary", "v3.1")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["release"] == "v3.1", "a canary of v3.1"
    )
    assert condition(status, "RolledBack")["status"] == "False"
    assert operator.crashed() is None


async def test_an_unreachable_prometheus_holds_the_canary(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    spec = canary_spec([{"weight": 25, "pause": "1s"}], analysis={"prometheusUrl": url})
    await ready_on(cluster, "flux", spec)
    await cluster.update_spec("flux", release="v2")
    await running(cluster, "flux-canary", "v2")
    await serve(cluster, "flux-canary")
    status = await cluster.wait_status(
        "flux",
        lambda s: condition(s, "Progressing").get("reason") == "CanaryInconclusive",
        "an inconclusive condition",
    )
    assert "unreachable" in condition(status, "Progressing")["message"]
    assert status["canary"]["measurements"][0]["outcome"] == "Inconclusive"
    await cluster.wait_event("CanaryInconclusive", "unreachable")
    # The 1s pause is long over: neither promoted nor aborted.
    await asyncio.sleep(2)
    status = (await must(cluster, "FluxDeployment", "flux"))["status"]
    assert (status["canary"]["phase"], status["canary"]["step"]) == ("Progressing", 0)
    stable = await must(cluster, "Deployment", "flux")
    assert image(stable) == f"{IMAGE}:v1.4.1"
    assert await cluster.get("Deployment", "flux-canary") is not None
    assert operator.crashed() is None


async def _cli(kubeconfig: Path, *args: str) -> int:
    return await asyncio.to_thread(
        cli_main, [*args, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig)]
    )


async def test_manual_promote_and_abort_and_a_restart_mid_canary(
    cluster: Cluster, operator: OperatorHandle, kubeconfig: Path
) -> None:
    # Pauses only, the last step without one: it waits for `promote`.
    spec = canary_spec([{"weight": 10, "pause": "1s"}, {"weight": 50}], max_surge=0)
    await ready_on(cluster, "flux", spec)
    await canary_serving(cluster, "flux", "v2")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Paused", "waiting for promote"
    )
    assert condition(status, "Progressing")["reason"] == "CanaryWaitsForPromote"
    assert status["canary"]["summary"] == "v2@50% Paused"

    async def pods() -> tuple[int, int]:
        stable = await must(cluster, "Deployment", "flux")
        canary = await cluster.get("Deployment", "flux-canary")
        assert stable is not None and canary is not None
        return stable["spec"]["replicas"], canary["spec"]["replicas"]

    # maxSurge 0: the stable side gives up the canary's pods.
    await cluster.wait_for(lambda: _equals(pods, (2, 2)), "2 stable and 2 canary pods")

    # The operator restarted mid-canary picks up where it was: nothing made twice.
    await operator.stop()
    history = status["history"]
    await operator.start()
    await asyncio.sleep(1.5)  # a periodic pass of the new operator
    status = (await must(cluster, "FluxDeployment", "flux"))["status"]
    assert status["canary"]["phase"] == "Paused" and status["history"] == history
    names = sorted(d["metadata"]["name"] for d in await cluster.list("Deployment"))
    assert names == ["flux", "flux-canary"]

    assert await _cli(kubeconfig, "promote", "flux") == 0
    await running(cluster, "flux", "v2")
    await serve(cluster, "flux")
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Promoted", "promoted by request"
    )
    assert "promoted by request" in (await cluster.wait_event("CanaryPromoted"))["message"]
    assert status["currentRelease"] == "v2"

    await canary_serving(cluster, "flux", "v3")
    assert await _cli(kubeconfig, "abort", "flux") == 0
    status = await cluster.wait_status(
        "flux", lambda s: s["canary"]["phase"] == "Aborted", "aborted by request"
    )
    assert condition(status, "RolledBack")["reason"] == "CanaryAborted"
    assert "aborted by request" in condition(status, "RolledBack")["message"]
    assert status["history"][-1]["outcome"] == "Failed"
    stable = await must(cluster, "Deployment", "flux")
    assert image(stable) == f"{IMAGE}:v2" and stable["spec"]["replicas"] == 4
    # The spec was never touched: the requests are annotations.
    body = await must(cluster, "FluxDeployment", "flux")
    assert body["spec"]["release"] == "v3"
    assert set(body["metadata"]["annotations"]) == {
        "fluxserve.dev/canary-promote",
        "fluxserve.dev/canary-abort",
    }
    assert operator.crashed() is None


async def _equals(read: Any, expected: Any) -> bool:
    return bool(await read() == expected)


@pytest.mark.parametrize(
    ("max_surge", "canary_pods", "hpa_bounds"), [(1, 1, (4, 8)), (0, 2, (2, 6))]
)
async def test_autoscaling_shares_the_hpa_count(
    cluster: Cluster,
    operator: OperatorHandle,
    max_surge: int,
    canary_pods: int,
    hpa_bounds: tuple[int, int],
) -> None:
    autoscaling = {"minReplicas": 4, "maxReplicas": 8, "targetQueueDepth": 4}
    spec = canary_spec(
        [{"weight": 50, "pause": "1h"}], max_surge=max_surge, autoscaling=autoscaling
    )
    await cluster.create_fd("flux", spec)
    await running(cluster, "flux", "v1.4.1")
    await cluster.wait_for(lambda: cluster.get("HorizontalPodAutoscaler", "flux"), "the HPA")
    # Playing the HPA controller: it asks for 4 pods and sets them on the Deployment.
    await cluster.patch("HorizontalPodAutoscaler", "flux", {"status": {"desiredReplicas": 4}})
    await cluster.patch("Deployment", "flux", {"spec": {"replicas": 4}})
    await serve(cluster, "flux")
    await cluster.wait_status("flux", lambda s: s.get("phase") == "Ready", "phase Ready")

    await cluster.update_spec("flux", release="v2")
    canary = await running(cluster, "flux-canary", "v2")
    assert canary["spec"]["replicas"] == canary_pods

    async def hpa() -> tuple[int, int]:
        found = await cluster.get("HorizontalPodAutoscaler", "flux")
        assert found is not None
        return found["spec"]["minReplicas"], found["spec"]["maxReplicas"]

    await cluster.wait_for(lambda: _equals(hpa, hpa_bounds), f"HPA bounds {hpa_bounds}")
    stable = await must(cluster, "Deployment", "flux")
    assert stable["spec"]["replicas"] == 4  # the operator never writes it: the HPA does
    # The HPA scales to 6 under load: the canary's share follows (capped at maxSurge).
    await cluster.patch("HorizontalPodAutoscaler", "flux", {"status": {"desiredReplicas": 6}})
    await serve(cluster, "flux-canary")
    grown = 1 if max_surge else 3

    async def canary_count() -> int:
        found = await cluster.get("Deployment", "flux-canary")
        assert found is not None
        return int(found["spec"]["replicas"])

    await cluster.wait_for(lambda: _equals(canary_count, grown), f"{grown} canary pods")
    # Promoted by request: NAME rolls within the budget (maxSurge 0: the bounds stay
    # lowered and it replaces a pod at a time), then the bounds return to the spec's.
    await cluster.annotate("flux", "fluxserve.dev/canary-promote", "v2")
    await running(cluster, "flux", "v2")
    rolling = await must(cluster, "Deployment", "flux")
    surge = max(0, max_surge - grown)
    assert rolling["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": surge,
        "maxUnavailable": 0 if surge else 1,
    }
    assert await hpa() == ((4, 8) if max_surge else (4 - grown, 8 - grown))
    await serve(cluster, "flux")
    await cluster.wait_for(lambda: _equals(hpa, (4, 8)), "the HPA's own bounds back")
    assert operator.crashed() is None

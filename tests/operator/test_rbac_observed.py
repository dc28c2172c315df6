"""RULES are exactly what the operator uses: every API call it makes in a run that takes
every code path that writes (children created, applied, pruned and deleted, the
NetworkPolicy among them; status; events; peering; namespaced mode) is granted, and
every grant was used in that run or is one the run cannot show (named below, with the
reason)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp.web
import kmock
import pytest
from conftest import (
    NAMESPACE,
    VERBS,
    ApiServerEmulator,
    Cluster,
    OperatorHandle,
    base_spec,
    condition,
)
from test_fleet_emulated import install_keda, wait_hpa, wait_keda
from test_training_emulated import (
    create_training,
    job_finishes,
    pod_running,
    result,
    step_line,
    training,
    training_status,
)

from flux_operator.rbac import RULES


async def training_progress(cluster: Cluster, step: int) -> bool:
    body = await cluster.get("FluxLoRATraining", "poster-style") or {}
    return bool(((body.get("status") or {}).get("progress") or {}).get("step") == step)


PEERING = "fluxserve"
KOPF_PEERINGS = "kopf.dev/v1/kopfpeerings"

# Grants no request in the emulator can show.
UNOBSERVABLE = {
    # Checked by the API server's OwnerReferencesPermissionEnforcement admission when a
    # child names the FluxDeployment with blockOwnerDeletion: no request of its own.
    ("fluxserve.dev", "fluxdeployments/finalizers", "update"),
    ("fluxserve.dev", "fluxloratrainings/finalizers", "update"),
    # engine kubeflow: the emulator serves no Kubeflow Trainer (nor does this test run one).
    ("trainer.kubeflow.org", "trainjobs", "get"),
    ("trainer.kubeflow.org", "trainjobs", "create"),
}


NAMESPACES_PATH = "/api/v1/namespaces"


class NamespacesServed(ApiServerEmulator):
    """kmock 0.8 cannot parse ``/api/v1/namespaces`` (it answers 500 to any request for
    it): this serves it as an API server would (the test's namespace; a watch that stays
    open with nothing to report) and records who asked."""

    namespace_verbs: set[str]

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.rstrip("/") != NAMESPACES_PATH or raw_request.method != "GET":
            return await super().__call__(raw_request)
        watch = raw_request.query.get("watch") in ("true", "1")
        if "test-token" in raw_request.headers.get("Authorization", ""):
            self.namespace_verbs = getattr(self, "namespace_verbs", set())
            self.namespace_verbs.add("watch" if watch else "list")
        if not watch:
            listing = {
                "kind": "NamespaceList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": NAMESPACE, "resourceVersion": "1"}}],
            }
            return aiohttp.web.json_response(listing)
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.sleep(float(raw_request.query.get("timeoutSeconds", "600")))
        return response


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": NamespacesServed}


def _verb(request: kmock.Request) -> str:
    method = str(request.method.value).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def _granted() -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _used(server: NamespacesServed) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every request the operator sent. Its requests carry
    the kubeconfig's token; the test's own (playing controllers and users) carry none."""
    used = {("", "namespaces", verb) for verb in getattr(server, "namespace_verbs", set())}
    for request in server:
        if (
            request.resource is None
            or request.resource.plural is None  # API discovery: open to every client
            or "test-token" not in request.headers.get("Authorization", "")
        ):
            continue
        resource = request.resource.plural
        if request.subresource:
            resource += f"/{request.subresource}"
        used.add((request.resource.group or "", resource, _verb(request)))
    return used


async def _canary_behind_a_gateway(cluster: Cluster) -> None:
    """A canary: NAME-canary and the HTTPRoute created, the route's weights applied, the
    canary deleted once promoted, the route deleted when the gateway is removed."""
    canary = {"strategy": "Canary", "canary": {"steps": [{"weight": 50, "pause": "1s"}]}}
    await cluster.update_spec("flux-dev", rollout=canary, gateway={"parentRefs": [{"name": "gw"}]})
    await cluster.wait_for(lambda: cluster.get("HTTPRoute", "flux-dev"), "the HTTPRoute")
    await cluster.update_spec("flux-dev", release="v1.5.0")
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-dev-canary"), "the canary")
    await cluster.deployment_available("flux-dev-canary")

    async def promoted() -> bool:
        deployment = await cluster.get("Deployment", "flux-dev") or {}
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {})
        return str((containers.get("containers") or [{}])[0].get("image")).endswith(":v1.5.0")

    await cluster.wait_for(promoted, "the stable Deployment rolled to the canary's release")
    await cluster.deployment_available("flux-dev")

    async def gone(kind: str) -> bool:
        return (
            await cluster.get(kind, "flux-dev-canary" if kind == "Deployment" else "flux-dev")
            is None
        )

    await cluster.wait_for(lambda: gone("Deployment"), "the canary deleted")
    await cluster.update_spec("flux-dev", gateway=None)
    await cluster.wait_for(lambda: gone("HTTPRoute"), "the HTTPRoute deleted")


async def _to_zero_and_back(cluster: Cluster) -> None:
    """Scale to zero with KEDA installed: the ScaledObject created (the HPA deleted),
    applied back after a hand edit, deleted when the HPA returns; the model cache's PVC
    created."""
    await install_keda(cluster)
    await cluster.update_spec(
        "flux-dev",
        rollout={"strategy": "RollingUpdate", "canary": None},
        model={"source": {"pvc": None, "hub": {}}},
        modelCache={"revision": "0123456789abcdef0123456789abcdef01234567"},
        queue={"url": "redis://queue:6379"},
        autoscaling={"minReplicas": 0, "maxReplicas": 4},
    )
    await wait_keda(cluster)
    await cluster.wait_for(lambda: cluster.list("PersistentVolumeClaim"), "the model cache")
    await cluster.patch("ScaledObject", "flux-dev", {"spec": {"maxReplicaCount": 9}})

    async def repaired() -> bool:
        scaled = await cluster.get("ScaledObject", "flux-dev")
        return bool(scaled and scaled["spec"]["maxReplicaCount"] == 4)

    await cluster.wait_for(repaired, "the ScaledObject applied back")
    await cluster.update_spec("flux-dev", autoscaling={"minReplicas": 1})
    await wait_hpa(cluster)


async def test_rules_are_exactly_what_the_operator_uses(
    cluster: Cluster, kmock: NamespacesServed, operator: OperatorHandle
) -> None:
    # Namespaced mode with peering: kopf then lists namespaces and keeps a KopfPeering.
    await operator.stop()
    kmock.resources[KOPF_PEERINGS] = kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs=VERBS, subresources=set()
    )
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": PEERING, "namespace": NAMESPACE},
    }
    url = f"{cluster.url}/apis/kopf.dev/v1/namespaces/{NAMESPACE}/kopfpeerings"
    async with cluster.session.post(url, json=peering) as resp:
        resp.raise_for_status()
    operator.settings = operator.settings.model_copy(
        update=dict(namespaces=(NAMESPACE,), peering=PEERING, priority=7)
    )
    await operator.start()

    # Children created (ConfigMaps, Deployment, Service, HPA), events, status.
    spec = base_spec(
        rollout={"progressDeadlineSeconds": 600, "revisionHistoryLimit": 1},
        safety={"blocklist": ["forbidden"]},
        networkPolicy={"from": [{"namespace": "gateway"}]},
    )
    await cluster.create_fd("flux-dev", spec)
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-dev"), "the Deployment")
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status("flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready")
    # A presets change: the Deployment applied again, the old ConfigMap pruned.
    await cluster.update_spec("flux-dev", stylePresets={"noir": {"promptTemplate": "{prompt}!"}})
    await cluster.wait_status("flux-dev", lambda s: s.get("currentRevision") == 2, "revision 2")
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status(
        "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "revision 2 ready"
    )

    async def one_presets_map() -> bool:
        maps = await cluster.list("ConfigMap")
        return len([m for m in maps if "-presets-" in m["metadata"]["name"]]) == 1

    await cluster.wait_for(one_presets_map, "the old presets ConfigMap pruned")
    # A Service, an HPA and a NetworkPolicy edited by hand are applied back; autoscaling
    # off deletes the HPA, the NetworkPolicy switched off deletes it.
    await cluster.patch("Service", "flux-dev", {"spec": {"type": "NodePort"}})
    await cluster.patch("HorizontalPodAutoscaler", "flux-dev", {"spec": {"maxReplicas": 9}})
    await cluster.patch("NetworkPolicy", "flux-dev", {"spec": {"policyTypes": ["Egress"]}})

    async def repaired() -> bool:
        service = await cluster.get("Service", "flux-dev")
        hpa = await cluster.get("HorizontalPodAutoscaler", "flux-dev")
        policy = await cluster.get("NetworkPolicy", "flux-dev")
        return bool(
            service
            and service["spec"]["type"] == "ClusterIP"
            and hpa
            and hpa["spec"]["maxReplicas"] == 4
            and policy
            and policy["spec"]["policyTypes"] == ["Ingress"]
        )

    await cluster.wait_for(repaired, "the Service, the HPA and the NetworkPolicy applied back")
    await cluster.update_spec("flux-dev", autoscaling=None, networkPolicy={"enabled": False})

    async def hpa_and_policy_gone() -> bool:
        return (
            await cluster.get("HorizontalPodAutoscaler", "flux-dev") is None
            and await cluster.get("NetworkPolicy", "flux-dev") is None
        )

    await cluster.wait_for(hpa_and_policy_gone, "the HPA and the NetworkPolicy deleted")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("observedGeneration") == 3, "generation 3 handled"
    )
    assert condition(status, "Degraded")["status"] == "False"
    await _canary_behind_a_gateway(cluster)
    await _to_zero_and_back(cluster)
    # A FluxLoRATraining: its Job created and followed, its running Pod's log read for the
    # progress, its Pod's result read, the adapter promoted into flux-dev's loras.
    await create_training(cluster, training())
    await cluster.wait_for(lambda: cluster.get("Job", "poster-style-train"), "the Job")
    await pod_running(cluster, [step_line(7, 60.0)])
    await cluster.wait_for(
        lambda: training_progress(cluster, 7), "the progress read from the trainer's log"
    )
    await job_finishes(cluster, result(base=0.4, final=0.3))
    await training_status(cluster, "Succeeded")
    assert cluster.server["patch", kmock.resource(KOPF_PEERINGS)], "kopf kept no peering"

    async def resynced() -> bool:
        # A periodic round reads the peering object by name (a fast run may end first).
        return any(r.name for r in kmock["get", kmock.resource(KOPF_PEERINGS)])

    await cluster.wait_for(resynced, "a periodic resync round")
    assert operator.crashed() is None

    used = _used(kmock)
    granted = _granted()
    # The cluster-wide peering is the namespaced one's twin (all namespaces watched).
    twins = {("kopf.dev", "clusterkopfpeerings", v) for g, r, v in used if r == "kopfpeerings"}
    assert used <= granted, f"used but not granted: {sorted(used - granted)}"
    unused = granted - used - twins - UNOBSERVABLE
    assert not unused, f"granted but never used: {sorted(unused)}"

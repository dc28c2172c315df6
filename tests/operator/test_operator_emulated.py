"""The real operator (kopf) against the Kubernetes API emulator over HTTP."""

from __future__ import annotations

from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec, condition


async def test_create_makes_children_and_reports_progress(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    created = await cluster.create_fd("flux-dev", base_spec())
    uid = created["metadata"]["uid"]

    deployment = await cluster.wait_for(
        lambda: cluster.get("Deployment", "flux-dev"), "the Deployment"
    )
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v1.4.1"
    assert await cluster.wait_for(lambda: cluster.get("Service", "flux-dev"), "the Service")
    hpa = await cluster.wait_for(
        lambda: cluster.get("HorizontalPodAutoscaler", "flux-dev"), "the HPA"
    )
    assert hpa["spec"]["maxReplicas"] == 4
    maps = [c for c in await cluster.list("ConfigMap") if "-presets-" in c["metadata"]["name"]]
    assert len(maps) == 1 and maps[0]["immutable"] is True

    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("history"), "a first revision in history"
    )
    assert status["history"][0]["outcome"] == "Progressing"
    assert (
        status["selector"]
        == "app.kubernetes.io/name=fluxserve-server,app.kubernetes.io/instance=flux-dev"
    )

    await cluster.deployment_available("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready"
    )
    assert status["currentRelease"] == "v1.4.1"
    assert status["history"][0]["outcome"] == "Available"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 1
    assert cluster.events("RevisionAvailable")
    assert operator.crashed() is None
    assert deployment["metadata"]["namespace"] == NAMESPACE

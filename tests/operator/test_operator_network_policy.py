"""spec.networkPolicy with the real operator (kopf) against the API emulator: the policy
is made, owned, kept as the spec says, and removed when switched off; a policy someone
else made is never touched."""

from __future__ import annotations

from typing import Any

from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec, condition

GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
WEB = {"namespaceSelector": {"matchLabels": {"team": "web"}}}


def _serving_peers(policy: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if policy is None:
        return None
    rules = policy["spec"].get("ingress") or []
    return next(
        (r.get("from") for r in rules if {"port": 8080, "protocol": "TCP"} in r.get("ports", [])),
        [],
    )


async def _peers_are(cluster: Cluster, peers: list[dict[str, Any]]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        policy = await cluster.get("NetworkPolicy", "flux-dev")
        return policy if _serving_peers(policy) == peers else None

    policy: dict[str, Any] = await cluster.wait_for(check, f"NetworkPolicy allowing {peers}")
    return policy


async def _gone(cluster: Cluster) -> None:
    async def check() -> bool:
        return await cluster.get("NetworkPolicy", "flux-dev") is None

    await cluster.wait_for(check, "the NetworkPolicy removed")


async def test_policy_follows_the_spec_and_goes_when_switched_off(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    spec = base_spec(networkPolicy={"from": [{"namespace": "gateway"}]})
    created = await cluster.create_fd("flux-dev", spec)
    policy = await _peers_are(cluster, [GATEWAY])
    assert policy["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "fluxserve-server",
        "app.kubernetes.io/instance": "flux-dev",
    }
    metrics = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9090]
    assert metrics[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status("flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready")

    # A new list of peers is applied.
    await cluster.update_spec(
        "flux-dev",
        networkPolicy={"from": [{"namespace": "gateway"}, {"namespaceSelector": {"team": "web"}}]},
    )
    await _peers_are(cluster, [GATEWAY, WEB])
    # Opened by hand, or deleted: put back (nothing watches NetworkPolicies; the periodic
    # resync notices).
    await cluster.patch("NetworkPolicy", "flux-dev", {"spec": {"ingress": [{}]}})
    await _peers_are(cluster, [GATEWAY, WEB])
    await cluster.delete("NetworkPolicy", "flux-dev")
    await _peers_are(cluster, [GATEWAY, WEB])

    # Switched off: removed, the peers kept in the spec, the rest untouched.
    await cluster.update_spec("flux-dev", networkPolicy={"enabled": False})
    await _gone(cluster)
    assert await cluster.get("Service", "flux-dev") is not None
    # On again, then the whole block removed from the spec: removed again.
    await cluster.update_spec("flux-dev", networkPolicy={"enabled": True})
    await _peers_are(cluster, [GATEWAY, WEB])
    await cluster.update_spec("flux-dev", networkPolicy=None)
    await _gone(cluster)
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("observedGeneration") == 5, "generation 5 handled"
    )
    assert condition(status, "Degraded")["status"] == "False"
    assert operator.crashed() is None


async def test_a_policy_of_someone_else_is_left_alone(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    theirs = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "flux-dev", "namespace": NAMESPACE, "labels": {"team": "net"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    async with cluster.session.post(cluster.path("NetworkPolicy"), json=theirs) as resp:
        resp.raise_for_status()
    # No policy wanted: the resource is served and theirs stays as it is.
    await cluster.create_fd("flux-dev", base_spec())
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-dev"), "the Deployment")
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status("flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready")
    # One wanted under the same name: Degraded, theirs still untouched.
    await cluster.update_spec("flux-dev", networkPolicy={})
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "Degraded", "phase Degraded"
    )
    assert condition(status, "Degraded")["reason"] == "ChildConflict"
    await cluster.wait_event("ChildConflict", "NetworkPolicy flux-dev")
    policy = await cluster.get("NetworkPolicy", "flux-dev")
    assert policy is not None
    assert policy["spec"] == theirs["spec"] and "ownerReferences" not in policy["metadata"]
    assert operator.crashed() is None

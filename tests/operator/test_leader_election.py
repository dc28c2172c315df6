"""With peering, only the leader acts, its periodic resync included: while a live peer of
higher priority is in kopf's peering object, a child deleted behind the operator's back
stays deleted; once that peer is gone, the operator repairs it."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import kmock
from conftest import VERBS, Cluster, OperatorHandle, base_spec

PEERING = "fluxserve"
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def test_a_standby_operator_does_not_resync(
    cluster: Cluster, kmock: kmock.KubernetesEmulator, operator: OperatorHandle
) -> None:
    await operator.stop()
    kmock.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=VERBS, subresources=set()
    )
    url = f"{cluster.url}/apis/{PEERINGS}"
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
    peering["metadata"] = {"name": PEERING}
    async with cluster.session.post(url, json=peering) as resp:
        resp.raise_for_status()
    operator.settings = operator.settings.model_copy(
        update=dict(peering=PEERING, priority=10, identity="pod-a")
    )
    await operator.start()
    await cluster.create_fd("flux-dev", base_spec())
    assert await cluster.wait_for(lambda: cluster.get("Service", "flux-dev"), "the Service")

    async def set_peer(info: dict[str, object] | None) -> None:
        patch = {"status": {"pod-b": info}}
        async with cluster.session.patch(
            f"{url}/{PEERING}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            resp.raise_for_status()

    def resync_reads() -> int:
        """Requests only a resync round makes: reading the peering object by name, or
        listing FluxDeployments outside a watch (kopf lists once, at its start)."""
        peering_reads = [
            r for r in kmock["get", kmock.resource(PEERINGS)] if r.name and "watch" not in r.params
        ]
        listings = [
            r
            for r in kmock["get", kmock.resource("fluxserve.dev/v1alpha1/fluxdeployments")]
            if not r.name and "watch" not in r.params and "labelSelector" in r.params
        ]
        return len(peering_reads) + len(listings)

    # Another operator of higher priority arrives: this one stands by.
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    await set_peer({"priority": 20, "lifetime": 600, "lastseen": now})
    rounds = resync_reads()
    # Two rounds: kopf lets a handler that was running when it paused finish (a
    # reconciliation of the Deployment's creation may still be under way at the first).
    await cluster.wait_for(lambda: _at_least(resync_reads, rounds + 2), "two resync rounds")
    await cluster.delete("Service", "flux-dev")
    rounds = resync_reads()
    await cluster.wait_for(lambda: _at_least(resync_reads, rounds + 3), "three resync rounds")
    assert await cluster.get("Service", "flux-dev") is None, "a standby operator acted"

    # The other operator leaves: this one leads again and repairs what is missing.
    await set_peer(None)
    assert await cluster.wait_for(lambda: cluster.get("Service", "flux-dev"), "Service restored")
    assert operator.crashed() is None


async def _at_least(count: Callable[[], int], n: int) -> bool:
    return count() >= n

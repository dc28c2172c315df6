"""The API requests the operator makes per FluxDeployment while resources are created: its
writes and nothing else. Each costs the presets ConfigMap, the Deployment, the Service and
the HPA (created once each), one status write and one Event: six. It reads nothing (the
reconciler reads kopf's watch cache), writes no status that did not change, and the
reconciliations that follow its own writes (the Deployment's event, the status's echo)
write nothing. Counted at the emulator, not timed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import kmock
from conftest import Cluster, OperatorHandle, base_spec

RESOURCES = 8
GOAL = 6
"""API requests per resource at creation (issue: the operator at 1,000 resources)."""
WATCHED = {
    "fluxdeployments",
    "deployments",
    "services",
    "configmaps",
    "horizontalpodautoscalers",
    "networkpolicies",
    "httproutes",
}


def _verb(request: kmock.Request) -> str:
    if request.action == kmock.action.WATCH:
        return "watch"
    names = {
        kmock.action.FETCH: "get",
        kmock.action.LIST: "list",
        kmock.action.CREATE: "create",
        kmock.action.UPDATE: "patch",
        kmock.action.DELETE: "delete",
    }
    return names.get(request.action, str(request.method)) if request.action else "other"


def _operators(server: kmock.KubernetesEmulator) -> list[kmock.Request]:
    """The operator's requests (kopf's and the kubernetes client's), not the test's."""
    agents = ("kopf/", "fluxserve-operator/")
    return [r for r in list(server) if r.headers.get("User-Agent", "").startswith(agents)]


async def _quiet(cluster: Cluster) -> int:
    """The operator's request count, once it has made none for a second."""
    state = {"count": -1, "since": 0.0}

    async def settled() -> bool:
        now = asyncio.get_running_loop().time()
        count = len(_operators(cluster.server))
        if count != state["count"]:
            state.update(count=count, since=now)
        return now - state["since"] >= 1.0

    await cluster.wait_for(settled, "the operator quiet")
    return int(state["count"])


async def test_requests_per_resource_at_creation(cluster: Cluster, kubeconfig: Path) -> None:
    operator = OperatorHandle(kubeconfig)
    # No periodic pass: it lists each kind once a round, whatever the number of resources.
    operator.settings = operator.settings.model_copy(update={"resync_seconds": 0})
    await operator.start()
    try:

        async def watching() -> bool:
            watches = [r for r in _operators(cluster.server) if _verb(r) == "watch"]
            return {r.resource.plural for r in watches if r.resource} >= WATCHED

        await cluster.wait_for(watching, "kopf watching every indexed kind")
        before = await _quiet(cluster)
        for i in range(RESOURCES):
            await cluster.create_fd(f"flux-{i}", base_spec())

        async def served() -> bool:
            for i in range(RESOURCES):
                body = await cluster.get("FluxDeployment", f"flux-{i}") or {}
                if not (body.get("status") or {}).get("history"):
                    return False
                if await cluster.get("HorizontalPodAutoscaler", f"flux-{i}") is None:
                    return False
            return True

        await cluster.wait_for(served, "every resource's children and status")
        await _quiet(cluster)
        made = _operators(cluster.server)[before:]
        by_verb = Counter(
            f"{_verb(r)}{'/' + r.subresource if r.subresource else ''} "
            f"{r.resource.plural if r.resource else '-'}"
            for r in made
        )
        assert operator.crashed() is None
        assert not [r for r in made if _verb(r) in ("get", "list")], by_verb
        assert len(made) <= GOAL * RESOURCES, (len(made) / RESOURCES, by_verb)
        # Each write happened once per resource.
        assert by_verb == Counter(
            {
                "create configmaps": RESOURCES,
                "create deployments": RESOURCES,
                "create services": RESOURCES,
                "create horizontalpodautoscalers": RESOURCES,
                "patch/status fluxdeployments": RESOURCES,
                "create events": RESOURCES,
            }
        )
    finally:
        await operator.stop()

"""The operator scenarios against a real Kubernetes API (kind, or any cluster).

Runs when FLUXSERVE_E2E_KUBECONFIG names a kubeconfig; skipped otherwise. The CRD from
crds/ is applied, a throw-away namespace is created, and the operator (kopf, in its own
thread as in the emulator tests) watches only that namespace. No GPU or server image is
needed: these scenarios check what the operator writes, not that pods become ready; the
full path with a running server is `make e2e`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_operator.commands import operate
from flux_operator.kube import KubeApi, load_configuration
from flux_operator.settings import OperatorSettings, RetrySettings

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("FLUXSERVE_E2E_KUBECONFIG")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG, reason="FLUXSERVE_E2E_KUBECONFIG is not set (no real cluster)"
    ),
]

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/fluxdeployments.fluxserve.dev"
APPLY = {"fieldManager": "fluxserve-e2e", "force": "true"}


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "release": "v1.4.1",
        "image": "ghcr.io/acme/fluxserve-server",
        "model": {"id": "tiny", "source": {"hub": {}}},
        "replicas": 1,
        "gpu": {"count": 0},
        "resources": {"cpu": "100m", "memory": "256Mi", "shmSize": "64Mi"},
        "stylePresets": {"cyberpunk": {"promptTemplate": "{prompt}, neon lights"}},
    }
    spec.update(changes)
    return spec


async def _wait(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class _Operator:
    """The operator in its own thread, watching one namespace; restartable."""

    def __init__(self, namespace: str) -> None:
        assert KUBECONFIG
        self.settings = OperatorSettings(
            namespaces=(namespace,), kubeconfig=Path(KUBECONFIG), health_port=0
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        stop = self._stop
        self._thread = threading.Thread(
            target=lambda: asyncio.run(operate(self.settings, stop_flag=stop)), daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            assert not self._thread.is_alive(), "the operator did not stop"


@pytest.fixture
async def real() -> AsyncIterator[tuple[KubeApi, str, _Operator]]:
    assert KUBECONFIG
    api = KubeApi(load_configuration(Path(KUBECONFIG)), RetrySettings(), threads=4)
    crd = yaml.safe_load((ROOT / "crds" / "fluxserve.dev_fluxdeployments.yaml").read_text())
    await api.request("PATCH", CRD_PATH, crd, APPLY, content_type="application/apply-patch+yaml")

    async def established() -> bool:
        body = await api.request("GET", CRD_PATH)
        conditions = body.get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await _wait(established, "the CRD established")
    namespace = f"fluxserve-e2e-{uuid.uuid4().hex[:6]}"
    await api.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    operator = _Operator(namespace)
    operator.start()
    try:
        yield api, namespace, operator
    finally:
        await operator.stop()
        await api.request("DELETE", f"/api/v1/namespaces/{namespace}")
        api.close()


async def _fd(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    body = await api.get("FluxDeployment", namespace, name)
    assert body is not None
    return body


async def test_children_history_presets_and_manual_rollback(
    real: tuple[KubeApi, str, _Operator],
) -> None:
    api, namespace, _ = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-e2e", "namespace": namespace},
        "spec": _spec(),
    }
    created = await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )
    uid = created["metadata"]["uid"]

    deployment = await _wait(lambda: api.get("Deployment", namespace, "flux-e2e"), "Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    assert await api.get("Service", namespace, "flux-e2e") is not None

    async def history(n: int) -> dict[str, Any] | None:
        status = (await _fd(api, namespace, "flux-e2e")).get("status") or {}
        return status if len(status.get("history", [])) == n else None

    status = await _wait(lambda: history(1), "revision 1")
    assert status["history"][0]["release"] == "v1.4.1"

    await api.merge_patch("FluxDeployment", namespace, "flux-e2e", {"spec": {"release": "v1.4.2"}})
    status = await _wait(lambda: history(2), "revision 2")
    assert status["history"][1]["release"] == "v1.4.2"
    assert status["observedGeneration"] == 2

    presets = {"noir": {"promptTemplate": "{prompt}, film noir"}}
    await api.merge_patch(
        "FluxDeployment", namespace, "flux-e2e", {"spec": {"stylePresets": presets}}
    )
    status = await _wait(lambda: history(3), "revision 3")
    new_map = status["history"][2]["presetsConfigMap"]
    assert await api.get("ConfigMap", namespace, new_map) is not None

    annotations = {"metadata": {"annotations": {"fluxserve.dev/rollback-to": "v1.4.1"}}}
    await api.merge_patch("FluxDeployment", namespace, "flux-e2e", annotations)

    async def rolled_back() -> dict[str, Any] | None:
        d = await api.get("Deployment", namespace, "flux-e2e")
        image = d["spec"]["template"]["spec"]["containers"][0]["image"] if d else ""
        return d if image.endswith(":v1.4.1") else None

    await _wait(rolled_back, "the Deployment back on v1.4.1")
    status = (await _fd(api, namespace, "flux-e2e"))["status"]
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["status"] == "True" and rolled["reason"] == "ManualRollback"


async def test_invalid_spec_is_degraded(real: tuple[KubeApi, str, _Operator]) -> None:
    api, namespace, _ = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-bad", "namespace": namespace},
        "spec": _spec(loras=[{"name": "ink", "path": "ink.safetensors"}]),
    }
    await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )

    async def degraded() -> dict[str, Any] | None:
        status = (await _fd(api, namespace, "flux-bad")).get("status") or {}
        return status if status.get("phase") == "Degraded" else None

    status = await _wait(degraded, "phase Degraded")
    condition = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert condition["reason"] == "InvalidSpec"
    assert await api.get("Deployment", namespace, "flux-bad") is None


async def test_restart_midway_duplicates_nothing(real: tuple[KubeApi, str, _Operator]) -> None:
    api, namespace, operator = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-restart", "namespace": namespace},
        "spec": _spec(),
    }
    await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )

    async def revisions(n: int) -> dict[str, Any] | None:
        status = (await _fd(api, namespace, "flux-restart")).get("status") or {}
        return status if len(status.get("history", [])) == n else None

    await _wait(lambda: revisions(1), "revision 1")
    await operator.stop()
    patch = {"spec": {"release": "v1.4.2"}}
    await api.merge_patch("FluxDeployment", namespace, "flux-restart", patch)
    operator.start()
    status = await _wait(lambda: revisions(2), "revision 2 after the restart")
    await operator.stop()
    operator.start()
    # A change that is not a new revision proves the restarted operator has handled it.
    await api.merge_patch("FluxDeployment", namespace, "flux-restart", {"spec": {"replicas": 2}})

    async def scaled() -> bool:
        d = await api.get("Deployment", namespace, "flux-restart")
        return bool(d and d["spec"].get("replicas") == 2)

    await _wait(scaled, "the Deployment scaled by the restarted operator")
    status = (await _fd(api, namespace, "flux-restart"))["status"]
    assert [e["revision"] for e in status["history"]] == [1, 2]
    maps = await api.list("ConfigMap", namespace, {"fluxserve.dev/fluxdeployment": "flux-restart"})
    assert len([m for m in maps if "-presets-" in m["metadata"]["name"]]) == 1


@pytest.mark.timeout(420)
async def test_missed_progress_deadline_rolls_back(real: tuple[KubeApi, str, _Operator]) -> None:
    """The real Deployment controller decides the deadline. Revision 1 runs no pods
    (replicas 0: available at once, with no image needed); revision 2 asks for a pod of an
    image that does not exist, so it cannot progress and the operator puts revision 1's
    image and presets back."""
    api, namespace, _ = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-deadline", "namespace": namespace},
        "spec": _spec(
            replicas=0,
            image="registry.invalid/fluxserve/fluxserve-server",
            rollout={"progressDeadlineSeconds": 60, "autoRollback": True},
        ),
    }
    await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )

    async def status_where(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        status = (await _fd(api, namespace, "flux-deadline")).get("status") or {}
        return status if status and predicate(status) else None

    await _wait(
        lambda: status_where(lambda s: s["history"][-1]["outcome"] == "Available"),
        "revision 1 available",
    )
    patch = {"spec": {"release": "v1.4.2", "replicas": 1}}
    await api.merge_patch("FluxDeployment", namespace, "flux-deadline", patch)
    status = await _wait(
        lambda: status_where(lambda s: s.get("phase") == "RolledBack"),
        "the automatic rollback",
        timeout=300,
    )
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["status"] == "True" and rolled["reason"] == "ProgressDeadlineExceeded"
    assert "v1.4.2" in rolled["message"]
    outcomes = [(e["release"], e["outcome"]) for e in status["history"][:2]]
    assert outcomes == [("v1.4.1", "Superseded"), ("v1.4.2", "RolledBack")]
    assert status["history"][2]["release"] == status["currentRelease"] == "v1.4.1"
    deployment = await api.get("Deployment", namespace, "flux-deadline")
    assert deployment is not None
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":v1.4.1")
    # The user's spec still names the failed release: the operator never rewrites it.
    assert (await _fd(api, namespace, "flux-deadline"))["spec"]["release"] == "v1.4.2"


async def test_deleting_the_resource_removes_its_children(
    real: tuple[KubeApi, str, _Operator],
) -> None:
    """The garbage collector follows the owner references the operator wrote."""
    api, namespace, _ = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-gone", "namespace": namespace},
        "spec": _spec(autoscaling={"minReplicas": 1, "maxReplicas": 2}),
    }
    await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )
    selector = {"fluxserve.dev/fluxdeployment": "flux-gone"}

    async def children() -> list[str]:
        found = []
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
            if await api.get(kind, namespace, "flux-gone") is not None:
                found.append(kind)
        found += [m["metadata"]["name"] for m in await api.list("ConfigMap", namespace, selector)]
        return found

    async def all_children() -> bool:
        return len(await children()) == 4

    await _wait(all_children, "Deployment, Service, HPA and presets ConfigMap")
    await api.delete("FluxDeployment", namespace, "flux-gone")

    async def none_left() -> bool:
        return not await children()

    await _wait(none_left, "the children garbage-collected", timeout=120)


async def test_turning_autoscaling_on_keeps_the_replicas(
    real: tuple[KubeApi, str, _Operator],
) -> None:
    """Server-side apply would drop spec.replicas (to 1) when the operator stops applying
    it; the operator hands the field over first, so the pods stay until the HPA acts."""
    api, namespace, _ = real
    body = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-scale", "namespace": namespace},
        "spec": _spec(replicas=1),
    }
    await api.request(
        "POST", f"/apis/fluxserve.dev/v1alpha1/namespaces/{namespace}/fluxdeployments", body
    )

    async def replicas(n: int) -> bool:
        d = await api.get("Deployment", namespace, "flux-scale")
        return bool(d and d["spec"].get("replicas") == n)

    await _wait(lambda: replicas(1), "1 replica")
    # Changed by an apply: from now on the operator's apply alone owns spec.replicas.
    await api.merge_patch("FluxDeployment", namespace, "flux-scale", {"spec": {"replicas": 2}})
    await _wait(lambda: replicas(2), "2 replicas")
    scaling = {"minReplicas": 1, "maxReplicas": 4}
    await api.merge_patch(
        "FluxDeployment", namespace, "flux-scale", {"spec": {"autoscaling": scaling}}
    )

    async def handled() -> bool:
        status = (await _fd(api, namespace, "flux-scale")).get("status") or {}
        hpa = await api.get("HorizontalPodAutoscaler", namespace, "flux-scale")
        return status.get("observedGeneration") == 3 and hpa is not None

    await _wait(handled, "the HPA, generation 3 handled")
    deployment = await api.get("Deployment", namespace, "flux-scale")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    managers = {e["manager"] for e in deployment["metadata"]["managedFields"]}
    assert "fluxserve-operator-replicas-handover" in managers

"""The operator against kmock's KubernetesEmulator over real HTTP, with real kopf.

The emulator stores objects and streams watch events, but it is not a full API server.
The tests play the missing parts, each marked where it happens:
- ``ApiServerEmulator`` adds the API server's bookkeeping the emulator lacks: a ``uid``
  and ``creationTimestamp`` on creation, and ``metadata.generation`` bumped when a spec
  changes (the operator relies on generation/observedGeneration like on a real cluster);
- the Deployment controller is the test: it writes ``Deployment.status``, with
  ``observedGeneration``;
- server-side apply of a missing object answers 404, so the operator creates it (a real
  server creates on apply; the operator handles both);
- kopf names its own events by ``generateName``, which the emulator does not expand:
  events are read from the requests the operator sent.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml

from flux_operator.commands import operate
from flux_operator.settings import OperatorSettings, RetrySettings

NAMESPACE = "studio"
POLL_TIMEOUT = 30.0

RESOURCES = {
    "fluxserve.dev/v1alpha1/fluxdeployments": ("FluxDeployment", True, {"status"}),
    "apps/v1/deployments": ("Deployment", True, {"status", "scale"}),
    "v1/services": ("Service", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, {"status"}),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True, set()),
    "v1/events": ("Event", True, set()),
    "gateway.networking.k8s.io/v1/httproutes": ("HTTPRoute", True, set()),
    "keda.sh/v1alpha1/scaledobjects": ("ScaledObject", True, {"status"}),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True, {"status"}),
    "fluxserve.dev/v1alpha1/fluxloratrainings": ("FluxLoRATraining", True, {"status"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/namespaces": ("Namespace", False, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}

PATHS = {
    "FluxDeployment": "/apis/fluxserve.dev/v1alpha1",
    "Deployment": "/apis/apps/v1",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2",
    "NetworkPolicy": "/apis/networking.k8s.io/v1",
    "Service": "/api/v1",
    "ConfigMap": "/api/v1",
    "Event": "/api/v1",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1",
    "ScaledObject": "/apis/keda.sh/v1alpha1",
    "PersistentVolumeClaim": "/api/v1",
    "FluxLoRATraining": "/apis/fluxserve.dev/v1alpha1",
    "Job": "/apis/batch/v1",
    "Pod": "/api/v1",
}
PLURALS = {
    "FluxDeployment": "fluxdeployments",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Event": "events",
    "HTTPRoute": "httproutes",
    "ScaledObject": "scaledobjects",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "FluxLoRATraining": "fluxloratrainings",
    "Job": "jobs",
    "Pod": "pods",
}


def base_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "release": "v1.4.1",
        "image": "ghcr.io/acme/fluxserve-server",
        "model": {
            "id": "black-forest-labs/FLUX.1-dev",
            "source": {"pvc": {"claimName": "flux-weights", "subPath": "FLUX.1-dev"}},
        },
        "replicas": 1,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 4},
        "stylePresets": {"cyberpunk": {"promptTemplate": "{prompt}, neon lights"}},
        "rollout": {"progressDeadlineSeconds": 900, "autoRollback": True},
    }
    spec.update(changes)
    return spec


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class ApiServerEmulator(kmock.KubernetesEmulator):
    """The emulator plus the API server's bookkeeping: uid, creationTimestamp, generation."""

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp",
                    datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
            elif (
                request.action == kmock.action.UPDATE
                and request.name is not None
                and request.subresource is None
                and "spec" in data
            ):
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    old = self.objects[key].raw
                    new_spec = merge_patch(old.get("spec"), data["spec"])
                    if new_spec != old.get("spec"):
                        generation = int(old.get("metadata", {}).get("generation", 1)) + 1
                        data.setdefault("metadata", {})["generation"] = generation
        return await super()._handle(request)


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": ApiServerEmulator}


class Cluster:
    """Test-side access to the emulator: the API server's and controllers' missing parts."""

    def __init__(self, server: kmock.KubernetesEmulator, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.url = str(server.url).rstrip("/")

    def path(self, kind: str, name: str | None = None, namespace: str = NAMESPACE) -> str:
        path = f"{self.url}{PATHS[kind]}/namespaces/{namespace}/{PLURALS[kind]}"
        return f"{path}/{name}" if name else path

    async def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        async with self.session.get(self.path(kind, name, namespace)) as resp:
            if resp.status == 404:
                return None
            resp.raise_for_status()
            return await resp.json()

    async def list(self, kind: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        async with self.session.get(self.path(kind, namespace=namespace)) as resp:
            resp.raise_for_status()
            items = (await resp.json())["items"]
        return [i for i in items if i.get("metadata", {}).get("namespace", namespace) == namespace]

    async def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        async with self.session.patch(
            self.path(kind, name),
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def create_fd(self, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "fluxserve.dev/v1alpha1",
            "kind": "FluxDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE, **meta},
            "spec": spec,
        }
        async with self.session.post(self.path("FluxDeployment"), json=body) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def update_spec(self, name: str, **changes: Any) -> None:
        await self.patch("FluxDeployment", name, {"spec": changes})

    async def delete(self, kind: str, name: str) -> None:
        async with self.session.delete(self.path(kind, name)) as resp:
            resp.raise_for_status()

    async def annotate(self, name: str, key: str, value: str | None) -> None:
        await self.patch("FluxDeployment", name, {"metadata": {"annotations": {key: value}}})

    async def _generation(self, name: str) -> int:
        deployment = await self.get("Deployment", name)
        assert deployment is not None
        return int(deployment["metadata"].get("generation", 1))

    async def deployment_available(self, name: str) -> None:
        # Playing the Deployment controller: the new ReplicaSet is up.
        await self.patch(
            "Deployment",
            name,
            {
                "status": {
                    "observedGeneration": await self._generation(name),
                    "replicas": 1,
                    "readyReplicas": 1,
                    "updatedReplicas": 1,
                    "availableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                        },
                    ],
                }
            },
        )

    async def deployment_deadline_exceeded(self, name: str) -> None:
        # Playing the Deployment controller: the new pods never became ready.
        await self.patch(
            "Deployment",
            name,
            {
                "status": {
                    "observedGeneration": await self._generation(name),
                    "replicas": 2,
                    "readyReplicas": 1,
                    "updatedReplicas": 1,
                    "availableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                        },
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": 'ReplicaSet "x" has timed out progressing.',
                        },
                    ],
                }
            },
        )

    async def deployment_rolling(self, name: str) -> None:
        # Playing the Deployment controller: a new template is rolling out.
        await self.patch(
            "Deployment",
            name,
            {
                "status": {
                    "observedGeneration": await self._generation(name),
                    "replicas": 2,
                    "readyReplicas": 1,
                    "updatedReplicas": 0,
                    "availableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                        },
                        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                    ],
                }
            },
        )

    async def wait_for(
        self,
        check: Callable[[], Awaitable[Any]],
        what: str,
        timeout: float = POLL_TIMEOUT,
    ) -> Any:
        """Poll ``check`` until it returns something truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: Any = None
        while asyncio.get_running_loop().time() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    async def wait_status(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            body = await self.get("FluxDeployment", name)
            status = (body or {}).get("status") or {}
            return status if status and predicate(status) else None

        return await self.wait_for(check, what)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """Events the operator posted. Read from the requests, not the stored objects: kopf
        names its own events (a failing handler's) with ``generateName``, which the emulator
        does not expand, so all but the first collide there (409); a real API server stores
        every one."""
        posted = self.server["post", kmock.resource("v1/events")]
        bodies = [request.data for request in posted]
        return [b for b in bodies if reason is None or b.get("reason") == reason]

    async def wait_event(self, reason: str, text: str = "") -> dict[str, Any]:
        """An event with ``reason`` whose message contains ``text`` (kopf posts in the
        background, after the handler)."""

        async def check() -> dict[str, Any] | None:
            found = [e for e in self.events(reason) if text in e.get("message", "")]
            return found[0] if found else None

        return await self.wait_for(check, f"event {reason} {text!r}")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


@pytest.fixture
def kubeconfig(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> Path:
    for key, (kind, namespaced, subresources) in RESOURCES.items():
        kmock.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=VERBS, subresources=subresources
        )
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {
                            "cluster": "emulator",
                            "user": "tester",
                            "namespace": NAMESPACE,
                        },
                    }
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator, kubeconfig: Path) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as session:
        yield Cluster(kmock, session)


class OperatorHandle:
    """Start and stop the real operator (kopf) — in its own thread and event loop, as in
    production: at exit kopf cancels every task of its loop, which must not be the
    emulator's."""

    def __init__(self, kubeconfig: Path) -> None:
        self.settings = OperatorSettings(
            kubeconfig=kubeconfig,
            health_port=0,
            retry=RetrySettings(attempts=8, first_delay=0.05, max_delay=0.5),
            api_threads=4,
            resync_seconds=1.0,
            progress_seconds=0.2,
        )
        self._running: list[tuple[threading.Event, threading.Thread]] = []
        self._errors: list[BaseException] = []

    def _main(self, stop: threading.Event) -> None:
        try:
            asyncio.run(operate(self.settings, stop_flag=stop))
        except BaseException as exc:  # reported by crashed()
            self._errors.append(exc)

    async def start(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._main, args=(stop,), daemon=True)
        thread.start()
        self._running.append((stop, thread))

    async def stop(self) -> None:
        while self._running:
            stop, thread = self._running.pop()
            stop.set()
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive(), "the operator did not stop"

    def crashed(self) -> BaseException | None:
        if self._errors:
            return self._errors[0]
        for _, thread in self._running:
            if not thread.is_alive():
                return RuntimeError("operator exited")
        return None


@pytest.fixture
async def operator(kubeconfig: Path) -> AsyncIterator[OperatorHandle]:
    handle = OperatorHandle(kubeconfig)
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()

"""The Kubernetes API stand-in of the operator benchmark (bench/operator_bench.py), in a
process of its own: kmock's KubernetesEmulator over HTTP, answering as an API server does
(uid, generation, lookups by key), recording when each FluxDeployment's children were all
created and counting the operator's requests by verb and kind. The driver reads its
figures from ``STATS_PATH``."""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import kmock

from flux_operator.kube import KINDS

DRIVER_AGENT = "fluxserve-operator-bench"
STATS_PATH = "/bench/stats"
# The children every bench resource gets (its spec has autoscaling and presets).
CHILD_KINDS = ("deployments", "services", "horizontalpodautoscalers")
# What kopf lists besides the kinds the operator uses.
KOPF_RESOURCES = {
    "v1/namespaces": ("Namespace", False, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
}
SUBRESOURCES = {
    "FluxDeployment": {"status"},
    "Deployment": {"status", "scale"},
    "HorizontalPodAutoscaler": {"status"},
}


def served_resources() -> dict[str, tuple[str, bool, set[str]]]:
    """Every kind the operator talks to (``kube.KINDS``, but kopf's peering: the bench runs
    one standalone operator), and what kopf lists."""
    served = {
        f"{info.api_version}/{info.plural}": (kind, info.namespaced, SUBRESOURCES.get(kind, set()))
        for kind, info in KINDS.items()
        if info.group != "kopf.dev"
    }
    return {**served, **KOPF_RESOURCES}


VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def verb_of(request: kmock.Request) -> str:
    """The request as the API server's audit log names it: get, list, watch, create, patch,
    delete (``/status`` appended for the subresource)."""
    action = request.action
    names = {
        kmock.action.FETCH: "get",
        kmock.action.LIST: "list",
        kmock.action.WATCH: "watch",
        kmock.action.CREATE: "create",
        kmock.action.UPDATE: "patch",
        kmock.action.DELETE: "delete",
    }
    verb = names.get(action, str(request.method).lower()) if action is not None else "other"
    return f"{verb}/{request.subresource}" if request.subresource else verb


class TimingEmulator(kmock.KubernetesEmulator):
    """The emulator, assigning uid/generation as an API server does, recording when each
    resource's children were all created and counting the operator's requests, and
    forgetting each request once answered.

    kmock keeps every request for a test's assertions and matches each new request
    against that history, so its own cost grows with every request served (O(n^2) over a
    run: after a few thousand requests, a GET takes tens of milliseconds). The benchmark
    asserts nothing on requests; dropping them keeps the figures about the operator.

    kmock also finds the object of a single-object request (the answer to a create, a
    patch, a get) by comparing it with every stored object: at 1,000 resources, 6,000
    comparisons a request. An API server looks it up by key; so does this stand-in.
    """

    created: dict[str, dict[str, float]]
    counts: Counter[tuple[str, str]]

    async def _handle(self, request: kmock.Request) -> Any:
        if not hasattr(self, "counts"):
            self.created, self.counts = {}, Counter()
        try:
            if request.url.path == STATS_PATH:
                return aiohttp.web.json_response(self._stats(request.params.get("full") == "1"))
            if request.headers.get("User-Agent") != DRIVER_AGENT:
                plural = request.resource.plural if request.resource is not None else "-"
                self.counts[(verb_of(request), plural)] += 1
            return await self._handle_timed(request)
        finally:
            self._forget(request)

    def _stats(self, full: bool) -> dict[str, Any]:
        done = {
            name: max(kinds.values()) for name, kinds in self.created.items() if len(kinds) == 4
        }
        stats: dict[str, Any] = {"done": len(done), "requests": sum(self.counts.values())}
        watching = {plural for (verb, plural) in self.counts if verb == "watch"}
        stats["watching"] = sorted(watching)
        if full:
            stats["done_at"] = done
            stats["counts"] = [[verb, plural, n] for (verb, plural), n in self.counts.items()]
        return stats

    def _forget(self, request: kmock.Request) -> None:
        self._requests[:] = [r for r in self._requests if r is not request]
        for payload in self._payloads:
            payload._requests[:] = [r for r in payload._requests if r is not request]

    def _record(self, plural: str, name: str) -> None:
        if plural in CHILD_KINDS:
            owner, kind = name, plural
        elif plural == "configmaps" and "-presets-" in name:
            owner, kind = name.split("-presets-", 1)[0], "presets"
        else:
            return
        self.created.setdefault(owner, {}).setdefault(kind, time.monotonic())

    def _stored(self, request: kmock.Request) -> Any:
        """The object a single-object request names, by key (None: never stored)."""
        meta = request.data.get("metadata", {}) if isinstance(request.data, dict) else {}
        namespace = request.namespace or meta.get("namespace")
        key = (request.resource, namespace, request.name or meta.get("name"))
        return self._objects._objects.get(key)

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj = self._stored(request)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: kmock.Request) -> Any:
        return self._stored(request).raw  # stored by _handle (kmock's) before this

    async def _serve_update(self, request: kmock.Request) -> Any:
        return self._stored(request).last.raw

    async def _serve_delete(self, request: kmock.Request) -> Any:
        return self._stored(request).last.raw

    async def _handle_timed(self, request: kmock.Request) -> Any:
        data = request.data
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and isinstance(data, dict)
        ):
            meta = data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            response = await super()._handle(request)
            if response.status < 300:
                self._record(request.resource.plural, str(meta.get("name")))
            return response
        return await super()._handle(request)


async def serve_emulator() -> None:
    """Serve until stdin closes (the driver ends), printing the URL first."""
    handler = TimingEmulator()
    for key, (kind, namespaced, subresources) in served_resources().items():
        handler.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=VERBS, subresources=subresources
        )
    async with handler as emulator, kmock.Server(emulator):
        print(emulator.url, flush=True)
        await asyncio.to_thread(sys.stdin.read)

"""The I/O of one reconciliation: read the resource and its children (from the watch
cache: no request), ask ``plan`` what to do, apply the rendered children that differ from
what the cluster holds, write the status when it changed, post the events.

Reconciliation is level-based and idempotent: every event (and every periodic pass)
reconciles the whole resource again, so a failed attempt is repaired by the next one and
an operator restart duplicates nothing. Every decision is in ``reconcile`` (pure); this
module only carries it out.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import urllib3

from flux_operator.cache import CRDS, WatchCache
from flux_operator.canary_analysis import analyse
from flux_operator.kube import ApiError, KubeApi, object_path
from flux_operator.logs import event_outcome
from flux_operator.reconcile import (
    Children,
    Event,
    Plan,
    owner_of,
    parse_status,
    plan,
    render_event,
)
from flux_operator.reconcile.children import (
    HANDOVER_MANAGER,
    blocklist_of,
    is_subset,
    keda_owned,
    owned_by,
    replicas_handover,
    stale_config_maps,
)
from flux_operator.render import (
    Owner,
    canary_name,
    render_children,
)
from flux_operator.render.keda import KEDA_CRD
from flux_operator.spec import FluxDeploymentSpec, FluxDeploymentStatus, rfc3339

logger = logging.getLogger(__name__)

# What the API may answer (after KubeApi's retries) that the next attempt may not meet.
TRANSIENT_FAILURES = (ApiError, urllib3.exceptions.HTTPError, OSError)


def now_rfc3339() -> str:
    return rfc3339(datetime.datetime.now(datetime.timezone.utc))


def status_dump(status: FluxDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True)


def status_patch(status: FluxDeploymentStatus) -> dict[str, Any]:
    """A merge patch that sets the whole status and removes the fields now empty."""
    body = status_dump(status)
    for name, info in FluxDeploymentStatus.model_fields.items():
        body.setdefault(info.alias or name, None)
    return body


def _watched(name: str) -> tuple[tuple[str, str], ...]:
    """The children whose events reconcile their owner at once: both Deployments (a
    rollout's progress) and the route (a canary's traffic split, edited or deleted)."""
    return (("Deployment", name), ("Deployment", canary_name(name)), ("HTTPRoute", name))


Leading = Callable[[str], Awaitable[bool]]
"""Whether this operator replica leads for a namespace now (see ``resync.leading``)."""


class Reconciler:
    """Brings one FluxDeployment's children and status in line with its spec."""

    def __init__(self, api: KubeApi, cache: WatchCache, leading: Leading | None = None) -> None:
        self.api = api
        self.cache = cache
        # Whether this replica leads for a namespace now: a requeue timer set while it led
        # must not act once another replica has taken over (kopf pauses only its handlers).
        self._leading = leading
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # What each resource looked like after its last reconciliation: an event that only
        # echoes our own status write needs no reconciliation.
        self._settled: dict[tuple[str, str], Any] = {}
        # The same for the watched children it left (its Deployments, its route): the event
        # of one we just created or applied is the echo of our write.
        self._left: dict[tuple[str, str, str], Any] = {}
        # A running canary is looked at again when its next analysis or step end is due.
        self._requeues: dict[tuple[str, str], asyncio.TimerHandle] = {}

    @staticmethod
    def _fingerprint(body: dict[str, Any], status: Any) -> Any:
        meta = body.get("metadata", {})
        return (meta.get("generation"), meta.get("annotations") or {}, body.get("spec"), status)

    def settled(self, body: dict[str, Any]) -> bool:
        """True when ``body`` is what the last reconciliation left (nothing new to do)."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace") or "default", meta.get("name", ""))
        return self._settled.get(key) == self._fingerprint(body, body.get("status"))

    @staticmethod
    def _child_print(obj: dict[str, Any] | None) -> Any:
        meta = (obj or {}).get("metadata", {})  # a route's status is the gateway's
        status = obj.get("status") if obj and obj.get("kind") != "HTTPRoute" else None
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        return None if obj is None else (meta.get("generation"), labels, annotations, status)

    def child_settled(self, kind: str, body: dict[str, Any]) -> bool:
        """True when the watched child ``body`` is what the last reconciliation left: its
        spec (by generation), labels, annotations and (a Deployment's) status."""
        meta = body.get("metadata", {})
        key = (kind, meta.get("namespace") or "default", meta.get("name", ""))
        return key in self._left and self._left[key] == self._child_print(body)

    def _leave(self, owner: Owner) -> None:
        namespace = owner.namespace or "default"
        for kind, name in _watched(owner.name):
            self._left[(kind, namespace, name)] = self._child_print(
                self.cache.get(kind, namespace, name)
            )

    def forget(self, namespace: str, name: str) -> None:
        self.cache.forget(namespace, name)
        self._settled.pop((namespace, name), None)
        for kind, child in _watched(name):
            self._left.pop((kind, namespace, child), None)
        self._locks.pop((namespace, name), None)
        timer = self._requeues.pop((namespace, name), None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Stop the pending requeues (the operator is stopping)."""
        for timer in self._requeues.values():
            timer.cancel()
        self._requeues.clear()
        for task in self._tasks:
            task.cancel()
        self._closed = True

    def _requeue(self, namespace: str, name: str, delay: float) -> None:
        """Reconcile again after ``delay`` seconds (one pending requeue per resource)."""
        if self._closed:
            return
        key = (namespace, name)
        old = self._requeues.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._requeues.pop(key, None)
            task = loop.create_task(self._requeued(namespace, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        # A little after the moment, so that the analysis interval has surely passed.
        self._requeues[key] = loop.call_later(delay + 0.2, fire)

    async def _requeued(self, namespace: str, name: str) -> None:
        try:
            if self._leading is not None and not await self._leading(namespace):
                logger.info("requeue dropped: another replica leads", extra={"object": name})
                return
            await self.reconcile(namespace, name)
        except Exception:  # the periodic pass and the next event try again
            logger.exception("requeued reconciliation failed", extra={"object": name})

    async def reconcile(self, namespace: str, name: str, *, changed_only: bool = False) -> None:
        """Reconcile the resource; with ``changed_only`` (an event), only when it or its
        Deployments changed since its last reconciliation. An event that arrived while
        that one was under way (the echo of its own writes) then costs nothing."""
        # One reconciliation per resource at a time: events for the resource and for its
        # Deployment arrive on different kopf workers.
        await self.cache.ready.wait()  # kopf has listed every indexed kind
        async with self._locks[(namespace, name)]:
            body = self.cache.get("FluxDeployment", namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                return  # gone: owner references let the garbage collector remove children
            if changed_only and self._unchanged(body):
                return
            await self._reconcile(body)

    def _unchanged(self, body: dict[str, Any]) -> bool:
        if not self.settled(body):
            return False
        owner = owner_of(body)
        namespace = owner.namespace or "default"
        for kind, name in _watched(owner.name):
            now = self._child_print(self.cache.get(kind, namespace, name))
            if now != self._left.get((kind, namespace, name)):
                return False
        return True

    def _read_children(self, owner: Owner) -> Children:
        namespace, name = owner.namespace or "default", owner.name
        cached = self.cache.get
        return Children(
            deployment=cached("Deployment", namespace, name),
            service=cached("Service", namespace, name),
            autoscaler=cached("HorizontalPodAutoscaler", namespace, name),
            network_policy=cached("NetworkPolicy", namespace, name),
            config_maps=self.cache.config_maps(namespace, name),
            canary_deployment=cached("Deployment", namespace, canary_name(name)),
            scaled_object=cached("ScaledObject", namespace, name),
            keda_installed=cached(CRDS, "default", KEDA_CRD) is not None,
        )

    async def _reconcile(self, body: dict[str, Any]) -> None:
        owner = owner_of(body)
        children = self._read_children(owner)
        now = now_rfc3339()
        measurements = await analyse(self.api, owner, body, children, now)
        decided = plan(body, children, now, measurements)
        served = decided.revision is not None and decided.spec is not None
        if served and await self._apply_children(owner, decided, children):
            decided = self._as_left(owner, body, decided, now)
        await self._write_status(owner, body, decided.status)
        if decided.requeue_after is not None:
            self._requeue(owner.namespace or "default", owner.name, decided.requeue_after)
        if served:
            self._settled[(owner.namespace or "default", owner.name)] = self._fingerprint(
                body, status_dump(decided.status)
            )
            self._leave(owner)
        release = decided.revision.release if decided.revision is not None else None
        for event in decided.events:
            logger.log(
                logging.WARNING if event.type == "Warning" else logging.INFO,
                "%s: %s",
                event.reason,
                event.message,
                extra={
                    "object": f"{owner.namespace}/{owner.name}",
                    "action": event.reason,
                    "outcome": event_outcome(event.type),
                    "release": release,
                },
            )
        await self._post(body, decided.events)

    def _as_left(self, owner: Owner, body: dict[str, Any], decided: Plan, now: str) -> Plan:
        """The plan again, from the status just decided and the children as this
        reconciliation left them, for the status to write: the first reconciliation of a
        resource says at once that the Deployment it created exists (Progressing, not
        Pending), in one status write instead of two. Its decisions were taken; only
        what follows from them is added (its events after the first plan's)."""
        after = {**body, "status": status_dump(decided.status)}
        again = plan(after, self._read_children(owner), now)
        if again.revision != decided.revision or again.spec is None:
            return decided  # it would decide otherwise: the next reconciliation does
        again.events = [*decided.events, *again.events]
        return again

    async def _apply_children(self, owner: Owner, decided: Plan, children: Children) -> bool:
        """Apply what ``decided`` runs: every child ``render_children`` lists that differs
        from the cluster's, in its order (the immutable ConfigMaps created once); then
        remove the children it does not list and the ConfigMaps no revision needs. True
        when anything was written."""
        assert decided.spec is not None and decided.revision is not None
        desired = render_children(
            owner, decided.spec, decided.revision, decided.canary, children.keda_installed
        )
        namespace = owner.namespace or "default"
        writes = self.cache.writes
        existing_maps = {cm["metadata"]["name"] for cm in children.config_maps or ()}
        # KEDA lets go of the workers before the HPA comes back: never two autoscalers.
        await self._remove(owner, [a for a in desired.absent if a[0] == "ScaledObject"])
        for obj in desired.objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            observed = self.cache.get(kind, namespace, name)
            if obj.get("immutable"):
                created = await self.api.create_once(obj) if name not in existing_maps else None
                if created is not None:
                    self.cache.wrote(created)
            elif (kind, name) == ("Deployment", owner.name):
                await self._apply_deployment(obj, decided.spec, children.deployment)
            elif kind in ("Job", "PersistentVolumeClaim"):  # immutable: made once, under a hash
                await self._apply(obj, observed, create_only=True)
            else:
                if kind == "HorizontalPodAutoscaler" and keda_owned(observed, name):
                    await self._delete(kind, namespace, name)  # our ScaledObject's, left over
                    observed = None
                await self._apply(obj, observed)
        await self._remove(owner, desired.absent)
        for name in stale_config_maps(
            children.config_maps or (), decided.keep_config_maps, blocklist_of(desired.objects)
        ):
            await self._delete("ConfigMap", namespace, name)
        return self.cache.writes != writes

    async def _remove(self, owner: Owner, absent: list[tuple[str, str]]) -> None:
        namespace = owner.namespace or "default"
        for kind, name in absent:
            leftover = self.cache.get(kind, namespace, name)
            # Never remove what the operator did not make: a NetworkPolicy left behind would
            # keep refusing callers the user now means to let in, but a foreign one is theirs.
            if leftover is not None and owned_by(leftover, owner):
                await self._delete(kind, namespace, name)

    async def _apply_deployment(
        self, desired: dict[str, Any], spec: FluxDeploymentSpec, observed: dict[str, Any] | None
    ) -> None:
        """``NAME``, handing ``spec.replicas`` over to the HPA first when autoscaling was
        just turned on."""
        handover = replicas_handover(observed, spec.autoscaling is not None)
        if handover is not None:
            await self.api.apply(handover, field_manager=HANDOVER_MANAGER)
            self.cache.wrote(await self.api.apply(desired))  # now without spec.replicas
        else:
            await self._apply(desired, observed)

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        await self.api.delete(kind, namespace, name)
        self.cache.removed(kind, namespace, name)

    async def _apply(
        self, desired: dict[str, Any], observed: dict[str, Any] | None, create_only: bool = False
    ) -> bool:
        if observed is None:
            self.cache.wrote(await self.api.create(desired))
        elif not create_only and not is_subset(desired, observed):
            self.cache.wrote(await self.api.apply(desired))
        else:
            return False  # nothing to change: no write, no event, no feedback loop
        return True

    async def _write_status(
        self, owner: Owner, body: dict[str, Any], new: FluxDeploymentStatus
    ) -> None:
        if body.get("status") and parse_status(body["status"]) == new:
            return  # no write without a change
        written = await self.api.merge_patch(
            "FluxDeployment",
            owner.namespace,
            owner.name,
            {"status": status_patch(new)},
            subresource="status",
        )
        self.cache.wrote({"kind": "FluxDeployment", **written})

    async def _post(self, body: dict[str, Any], events: list[Event]) -> None:
        # Posted here rather than with kopf.event(): that needs the context of a kopf
        # handler, and the periodic resync reconciles outside one.
        for event in events:
            obj = render_event(body, event, now_rfc3339(), uuid.uuid4().hex[:16])
            try:
                await self.api.request(
                    "POST", object_path("Event", obj["metadata"]["namespace"]), obj
                )
            except TRANSIENT_FAILURES as exc:
                logger.warning(
                    "event not posted",
                    extra={
                        "object": body["metadata"]["name"],
                        "reason": event.reason,
                        "error": str(exc),
                    },
                )

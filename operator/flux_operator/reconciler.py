"""The I/O of one reconciliation: read the resource and its children, ask ``plan`` what to
do, apply the rendered children, write the status, post the events.

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
from typing import Any

import urllib3

from flux_operator.kube import ApiError, KubeApi, object_path
from flux_operator.logs import event_outcome
from flux_operator.prometheus import measure
from flux_operator.reconcile import (
    Children,
    Event,
    Plan,
    owner_of,
    parse_status,
    plan,
    render_event,
)
from flux_operator.reconcile.analysis import round_summary
from flux_operator.reconcile.canary_rollout import analysis_due_for
from flux_operator.reconcile.children import (
    HANDOVER_MANAGER,
    config_map_selector,
    is_subset,
    owned_by,
    replicas_handover,
    stale_config_maps,
)
from flux_operator.render import (
    KIND_LABEL,
    Owner,
    canary_name,
    desired_revision,
    render_children,
)
from flux_operator.spec import FluxDeploymentSpec, FluxDeploymentStatus, parse_time, rfc3339

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


class Reconciler:
    """Brings one FluxDeployment's children and status in line with its spec."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # What each resource looked like after its last reconciliation: an event that only
        # echoes our own status write needs no reconciliation.
        self._settled: dict[tuple[str, str], Any] = {}
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

    def forget(self, namespace: str, name: str) -> None:
        self._settled.pop((namespace, name), None)
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
            await self.reconcile(namespace, name)
        except Exception:  # the periodic pass and the next event try again
            logger.exception("requeued reconciliation failed", extra={"object": name})

    async def reconcile(self, namespace: str, name: str) -> None:
        # One reconciliation per resource at a time: events for the resource and for its
        # Deployment arrive on different kopf workers.
        async with self._locks[(namespace, name)]:
            body = await self.api.get("FluxDeployment", namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                return  # gone: owner references let the garbage collector remove children
            await self._reconcile(body)

    async def _read_children(self, owner: Owner) -> Children:
        namespace, name = owner.namespace, owner.name
        return Children(
            deployment=await self.api.get("Deployment", namespace, name),
            service=await self.api.get("Service", namespace, name),
            autoscaler=await self.api.get("HorizontalPodAutoscaler", namespace, name),
            network_policy=await self.api.get("NetworkPolicy", namespace, name),
            config_maps=tuple(
                await self.api.list("ConfigMap", namespace, config_map_selector(owner))
            ),
            canary_deployment=await self.api.get("Deployment", namespace, canary_name(name)),
        )

    async def _reconcile(self, body: dict[str, Any]) -> None:
        owner = owner_of(body)
        children = await self._read_children(owner)
        now = now_rfc3339()
        measurements = await self._analyse(owner, body, children, now)
        decided = plan(body, children, now, measurements)
        served = decided.revision is not None and decided.spec is not None
        if served:
            await self._apply_children(owner, decided, children)
        await self._write_status(owner, body, decided.status)
        if decided.requeue_after is not None:
            self._requeue(owner.namespace or "default", owner.name, decided.requeue_after)
        if served:
            self._settled[(owner.namespace or "default", owner.name)] = self._fingerprint(
                body, status_dump(decided.status)
            )
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

    async def _analyse(
        self, owner: Owner, body: dict[str, Any], children: Children, now: str
    ) -> list[Any] | None:
        """The canary's analysis when one is due (None otherwise), made in a thread: the
        Prometheus queries must not block kopf's event loop."""
        status = parse_status(body.get("status"))
        if status.canary is None:
            return None
        try:
            spec = FluxDeploymentSpec.model_validate(body.get("spec") or {})
            # Rendering the revision checks what the schema cannot (an experiment's
            # weights, say) and raises on it.
            revision = desired_revision(owner, spec)
        except ValueError:
            return None  # plan() reports the spec's problems
        analysis = analysis_due_for(
            spec, revision, status.canary, children.canary_deployment, parse_time(now)
        )
        if analysis is None:
            return None
        measured = await asyncio.to_thread(
            measure,
            analysis,
            release=status.canary.release,
            namespace=owner.namespace or "default",
            name=owner.name,
            now=parse_time(now),
        )
        logger.info(
            "canary analysis",
            extra={"object": f"{owner.namespace}/{owner.name}", "round": round_summary(measured)},
        )
        return measured

    async def _apply_children(self, owner: Owner, decided: Plan, children: Children) -> None:
        """Apply what ``decided`` runs: every child ``render_children`` lists, in its order
        (the immutable ConfigMaps created once); then remove the children it does not list
        and the ConfigMaps no revision needs."""
        assert decided.spec is not None and decided.revision is not None
        desired = render_children(owner, decided.spec, decided.revision, decided.canary)
        observed = _by_name(owner, children)
        existing_maps = {cm["metadata"]["name"] for cm in children.config_maps or ()}
        for obj in desired.objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            if obj.get("immutable"):
                if name not in existing_maps:
                    await self.api.create_if_absent(obj)
            elif (kind, name) == ("Deployment", owner.name):
                await self._apply_deployment(obj, decided.spec, children.deployment)
            else:
                await self._apply(obj, await self._observed(observed, owner, kind, name))
        for kind, name in desired.absent:
            leftover = await self._observed(observed, owner, kind, name)
            # Never remove what the operator did not make: a NetworkPolicy left behind would
            # keep refusing callers the user now means to let in, but a foreign one is theirs.
            if leftover is not None and owned_by(leftover, owner):
                await self.api.delete(kind, owner.namespace, name)
        blocklists = [o for o in desired.objects if _config_kind(o) == "blocklist"]
        blocklist_name = blocklists[0]["metadata"]["name"] if blocklists else None
        for name in stale_config_maps(
            children.config_maps or (), decided.keep_config_maps, blocklist_name
        ):
            await self.api.delete("ConfigMap", owner.namespace, name)

    async def _apply_deployment(
        self, desired: dict[str, Any], spec: FluxDeploymentSpec, observed: dict[str, Any] | None
    ) -> None:
        """``NAME``, handing ``spec.replicas`` over to the HPA first when autoscaling was
        just turned on."""
        handover = replicas_handover(observed, spec.autoscaling is not None)
        if handover is not None:
            await self.api.apply(handover, field_manager=HANDOVER_MANAGER)
            await self.api.apply(desired)  # now without spec.replicas
        else:
            await self._apply(desired, observed)

    async def _observed(
        self,
        known: dict[tuple[str, str], dict[str, Any] | None],
        owner: Owner,
        kind: str,
        name: str,
    ) -> dict[str, Any] | None:
        """The child as read with the resource, else as the API server has it now."""
        if (kind, name) in known:
            return known[(kind, name)]
        return await self.api.get(kind, owner.namespace, name)

    async def _apply(self, desired: dict[str, Any], observed: dict[str, Any] | None) -> bool:
        if observed is None:
            await self.api.create(desired)
        elif not is_subset(desired, observed):
            await self.api.apply(desired)
        else:
            return False  # nothing to change: no write, no event, no feedback loop
        return True

    async def _write_status(
        self, owner: Owner, body: dict[str, Any], new: FluxDeploymentStatus
    ) -> None:
        if body.get("status") and parse_status(body["status"]) == new:
            return
        await self.api.merge_patch(
            "FluxDeployment",
            owner.namespace,
            owner.name,
            {"status": status_patch(new)},
            subresource="status",
        )

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


def _by_name(owner: Owner, children: Children) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The children read with the resource, by ``(kind, name)``."""
    return {
        ("Deployment", owner.name): children.deployment,
        ("Deployment", canary_name(owner.name)): children.canary_deployment,
        ("Service", owner.name): children.service,
        ("HorizontalPodAutoscaler", owner.name): children.autoscaler,
        ("NetworkPolicy", owner.name): children.network_policy,
    }


def _config_kind(obj: dict[str, Any]) -> str | None:
    if obj["kind"] != "ConfigMap":
        return None
    return str(obj["metadata"].get("labels", {}).get(KIND_LABEL))

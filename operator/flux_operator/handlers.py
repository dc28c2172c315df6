"""kopf handlers: watch FluxDeployments and their Deployments, and reconcile.

Handlers only route events to ``Reconciler``, which reads, asks ``reconcile.plan`` what
to do, applies the rendered objects and writes the status. Reconciliation is level-based
and idempotent: every event (and every re-list) reconciles the whole resource again, so a
failed attempt is repaired by the next one and an operator restart duplicates nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
import urllib3

from flux_operator.kube import (
    FIELD_MANAGER,
    ApiError,
    KubeApi,
    load_configuration,
    object_path,
)
from flux_operator.peering import leads
from flux_operator.reconcile import Event, degraded_status, plan
from flux_operator.render import (
    INSTANCE_LABEL,
    KIND_LABEL,
    MANAGER,
    OWNER_LABEL,
    Owner,
    desired_revision,
    render_blocklist_config_map,
    render_deployment,
    render_hpa,
    render_presets_config_map,
    render_service,
)
from flux_operator.settings import OperatorSettings
from flux_operator.spec import GROUP, PLURAL, VERSION, FluxDeploymentSpec, FluxDeploymentStatus
from flux_operator.validation import spec_problems

logger = logging.getLogger(__name__)

# What the API may answer (after KubeApi's retries) that the next attempt may not meet.
TRANSIENT_FAILURES = (ApiError, urllib3.exceptions.HTTPError, OSError)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_subset(desired: Any, observed: Any) -> bool:
    """True when everything ``desired`` says is already in ``observed`` (the API server
    adds defaults and status; those do not count as drift)."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            key in observed and is_subset(value, observed[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(is_subset(d, o) for d, o in zip(desired, observed, strict=True))
        )
    return bool(desired == observed)


HANDOVER_MANAGER = f"{MANAGER}-replicas-handover"


def replicas_handover(
    deployment: dict[str, Any] | None, autoscaling: bool
) -> dict[str, Any] | None:
    """When autoscaling is turned on, the apply that leaves out ``spec.replicas`` would,
    under server-side apply, remove the field the operator owned: the Deployment would
    drop to 1 pod before the HPA scales it back. Kubernetes' way to hand a field over:
    another field manager applies the current value first and keeps it until the HPA
    takes it. This is that apply, or None when there is nothing to hand over."""
    if not autoscaling or deployment is None:
        return None
    meta = deployment.get("metadata", {})
    owned = any(
        entry.get("manager") == FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in meta.get("managedFields") or []
    )
    replicas = deployment.get("spec", {}).get("replicas")
    if not owned or replicas is None:
        return None
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "spec": {"replicas": replicas},
    }


def status_dump(status: FluxDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True)


def status_patch(status: FluxDeploymentStatus) -> dict[str, Any]:
    """A merge patch that sets the whole status and removes the fields now empty."""
    body = status.model_dump(by_alias=True, exclude_none=True)
    for name, info in FluxDeploymentStatus.model_fields.items():
        alias = info.alias or name
        body.setdefault(alias, None)
    return body


class Reconciler:
    """Brings one FluxDeployment's children and status in line with its spec."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        # ConfigMaps are immutable and content-named: once seen, there is no need to look.
        self._known_maps: set[tuple[str, str]] = set()
        # What each resource looked like after its last reconciliation: an event that only
        # echoes our own status write needs no reconciliation.
        self._settled: dict[tuple[str, str], Any] = {}

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

    async def _ensure_map(self, obj: dict[str, Any]) -> None:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key not in self._known_maps:
            await self.api.create_if_absent(obj)
            self._known_maps.add(key)

    async def reconcile(self, namespace: str, name: str) -> None:
        # One reconciliation per resource at a time: events for the resource and for its
        # Deployment arrive on different kopf workers.
        async with self._locks[(namespace, name)]:
            body = await self.api.get("FluxDeployment", namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                return  # gone: owner references let the garbage collector remove children
            await self._reconcile(body)

    async def _reconcile(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        owner = Owner(name=name, namespace=namespace, uid=meta.get("uid"))
        generation = meta.get("generation")
        old_status = _parse_status(body.get("status"))
        log = logging.LoggerAdapter(logger, {"object": f"{namespace}/{name}"})

        problems = spec_problems(body)
        if problems:
            message = "; ".join(problems)
            new_status = degraded_status(
                old_status, generation, "InvalidSpec", message, now_rfc3339()
            )
            old_degraded = next((c for c in old_status.conditions if c.type == "Degraded"), None)
            await self._write_status(owner, body, old_status, new_status)
            if old_degraded is None or old_degraded.message != message:
                log.warning("spec cannot be served: %s", message)
                await self._post(body, [Event("Warning", "InvalidSpec", message)])
            return

        spec = FluxDeploymentSpec.model_validate(body["spec"])
        deployment = await self.api.get("Deployment", namespace, name)
        decided = plan(
            owner,
            spec,
            old_status,
            meta.get("annotations") or {},
            generation,
            deployment,
            now_rfc3339(),
        )
        revision = decided.revision
        assert revision is not None
        new_status = decided.status

        if revision == desired_revision(owner, spec):
            await self._ensure_map(render_presets_config_map(owner, spec, revision))
        elif await self.api.get("ConfigMap", namespace, revision.presets_config_map) is None:
            # An older revision's presets are only in its ConfigMap: without it, stop here.
            message = (
                f"presets ConfigMap {revision.presets_config_map} of release "
                f"{revision.release} is missing; cannot restore it"
            )
            new_status = degraded_status(
                new_status, generation, "PresetsMissing", message, now_rfc3339()
            )
            await self._write_status(owner, body, old_status, new_status)
            await self._post(body, [*decided.events, Event("Warning", "PresetsMissing", message)])
            return

        existing_service = await self.api.get("Service", namespace, name)
        existing_hpa = await self.api.get("HorizontalPodAutoscaler", namespace, name)
        foreign = [
            f"{obj['kind']} {name}"
            for obj in (
                deployment,
                existing_service,
                existing_hpa if spec.autoscaling is not None else None,
            )
            if obj is not None and not _owned_by(obj, owner)
        ]
        if foreign:
            # Never take over what someone else made: say so and leave it alone.
            message = f"{', '.join(foreign)} already exist(s) and belong(s) to something else"
            new_status = degraded_status(
                old_status, generation, "ChildConflict", message, now_rfc3339()
            )
            old_degraded = next((c for c in old_status.conditions if c.type == "Degraded"), None)
            await self._write_status(owner, body, old_status, new_status)
            if old_degraded is None or old_degraded.message != message:
                await self._post(body, [Event("Warning", "ChildConflict", message)])
            return

        blocklist = render_blocklist_config_map(owner, spec)
        if blocklist is not None:
            await self._ensure_map(blocklist)
        desired_deployment = render_deployment(owner, spec, revision)
        handover = replicas_handover(deployment, spec.autoscaling is not None)
        if handover is not None:
            await self.api.apply(handover, field_manager=HANDOVER_MANAGER)
            await self.api.apply(desired_deployment)  # now without spec.replicas
            rolled = True
        else:
            rolled = await self._apply(desired_deployment, deployment)
        await self._apply(render_service(owner, spec), existing_service)
        hpa = render_hpa(owner, spec)
        if hpa is not None:
            await self._apply(hpa, existing_hpa)
        elif existing_hpa is not None and _owned(existing_hpa):
            await self.api.delete("HorizontalPodAutoscaler", namespace, name)

        old_maps = {e.presets_config_map for e in old_status.history}
        if rolled or old_maps - decided.keep_config_maps:
            await self._prune_config_maps(owner, decided.keep_config_maps, blocklist)

        await self._write_status(owner, body, old_status, new_status)
        self._settled[(namespace, name)] = self._fingerprint(body, status_dump(new_status))
        for event in decided.events:
            log.info("%s: %s", event.reason, event.message)
        await self._post(body, decided.events)

    async def _apply(self, desired: dict[str, Any], observed: dict[str, Any] | None) -> bool:
        if observed is None:
            await self.api.create(desired)
        elif not is_subset(desired, observed):
            await self.api.apply(desired)
        else:
            return False  # nothing to change: no write, no event, no feedback loop
        return True

    async def _prune_config_maps(
        self, owner: Owner, keep: set[str], blocklist: dict[str, Any] | None
    ) -> None:
        maps = await self.api.list(
            "ConfigMap", owner.namespace, {OWNER_LABEL: owner.name, INSTANCE_LABEL: owner.name}
        )
        current_blocklist = blocklist["metadata"]["name"] if blocklist else None
        for cm in maps:
            labels = cm.get("metadata", {}).get("labels", {})
            cm_name = cm["metadata"]["name"]
            kind = labels.get(KIND_LABEL)
            stale = (kind == "presets" and cm_name not in keep) or (
                kind == "blocklist" and cm_name != current_blocklist
            )
            if stale and labels.get("app.kubernetes.io/managed-by") == MANAGER:
                await self.api.delete("ConfigMap", owner.namespace, cm_name)
                self._known_maps.discard((owner.namespace or "", cm_name))

    async def _write_status(
        self,
        owner: Owner,
        body: dict[str, Any],
        old: FluxDeploymentStatus,
        new: FluxDeploymentStatus,
    ) -> None:
        if old == new and body.get("status"):
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


EVENT_MESSAGE_LIMIT = 1024
"""The API server refuses longer event messages."""


def render_event(body: dict[str, Any], event: Event, now: str, suffix: str) -> dict[str, Any]:
    """A core/v1 Event about the FluxDeployment ``body`` (named as kubectl would show it:
    ``<name>.<suffix>``)."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    message = event.message
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FluxDeployment",
            "name": meta["name"],
            "namespace": namespace,
            **({"uid": meta["uid"]} if meta.get("uid") else {}),
            **({"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {}),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's body views as plain dicts (the nested values are plain already)."""
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in body.items()}


def _owned_by(obj: dict[str, Any], owner: Owner) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    if owner.uid is None:
        return _owned(obj)
    return any(ref.get("uid") == owner.uid for ref in refs)


def _owned(obj: dict[str, Any]) -> bool:
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGER


def _parse_status(raw: Any) -> FluxDeploymentStatus:
    try:
        return FluxDeploymentStatus.model_validate(raw or {})
    except ValueError:
        # A status we cannot read (hand-edited, older format) is rebuilt from scratch.
        return FluxDeploymentStatus()


async def resync_forever(
    namespaces: list[str | None],
    list_all: Callable[[str | None], Awaitable[list[dict[str, Any]]]],
    reconcile: Callable[[str, str], Awaitable[None]],
    period: float,
) -> None:
    """Every ``period`` seconds, reconcile every FluxDeployment, events or not (repairs
    children deleted or edited behind the operator's back). Nothing that fails in one
    round stops the next: an API server restart must not end the repairs for good."""
    while True:
        await asyncio.sleep(period)
        for namespace in namespaces:
            try:
                items = await list_all(namespace)
            except TRANSIENT_FAILURES as exc:
                logger.warning("resync listing failed", extra={"error": str(exc)})
                continue
            for item in items:
                meta = item.get("metadata", {})
                try:
                    await reconcile(meta.get("namespace") or "default", meta["name"])
                except Exception:
                    logger.exception("resync failed", extra={"object": meta.get("name")})


async def leading(api: KubeApi, settings: OperatorSettings, namespace: str | None) -> bool:
    """Whether this operator acts for ``namespace`` (None: cluster-wide) now: always when
    standalone; with peering, when it leads kopf's peering object there (kopf waits while
    the object is missing, and so does this)."""
    if settings.peering is None:
        return True
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    peering = await api.get(kind, namespace, settings.peering)
    if peering is None:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    return leads(peering.get("status"), settings.identity or "", settings.priority, now)


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A fresh kopf registry with the operator's handlers (no module-level state)."""
    registry = kopf.OperatorRegistry()
    configuration = load_configuration(settings.kubeconfig)
    holder: dict[str, Reconciler] = {}
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        header = configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or configuration.get_api_key_with_prefix("authorization")
        parts = header.split(" ", 1) if header else []
        scheme, token = (
            (None, None)
            if not parts
            else (None, parts[0])
            if len(parts) == 1
            else (parts[0], parts[1])
        )
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            username=configuration.username or None,
            password=configuration.password or None,
            scheme=scheme,
            token=token,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = operator_settings.watch_timeout_seconds
        reconciler = Reconciler(
            KubeApi(configuration, operator_settings.retry, operator_settings.api_threads)
        )
        holder["reconciler"] = reconciler
        if operator_settings.resync_seconds > 0:
            namespaces: list[str | None] = list(operator_settings.namespaces) or [None]

            async def list_all(namespace: str | None) -> list[dict[str, Any]]:
                if not await leading(reconciler.api, operator_settings, namespace):
                    return []  # a standby replica: the leader resyncs
                return await reconciler.api.list("FluxDeployment", namespace, {})

            resync = resync_forever(
                namespaces, list_all, _reconcile, operator_settings.resync_seconds
            )
            tasks.append(asyncio.create_task(resync))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        reconciler = holder.pop("reconciler", None)
        if reconciler is not None:
            reconciler.api.close()

    async def _reconcile(namespace: str, name: str) -> None:
        try:
            await holder["reconciler"].reconcile(namespace, name)
        except TRANSIENT_FAILURES as exc:
            # Retried inside KubeApi already; the next event or re-list tries again.
            logger.error(
                "reconciliation failed", extra={"object": f"{namespace}/{name}", "error": str(exc)}
            )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def fluxdeployment_event(
        *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        reconciler = holder["reconciler"]
        namespace = namespace or "default"
        if event.get("type") == "DELETED":
            reconciler.forget(namespace, name)
            return
        if reconciler.settled(_plain(body)):
            return  # the echo of our own status write
        await _reconcile(namespace, name)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": MANAGER},
        registry=registry,
    )
    async def deployment_event(
        *, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        owner = labels.get(OWNER_LABEL)
        if owner and namespace:
            await _reconcile(namespace, owner)

    operator_settings = settings
    return registry

"""Pure decisions about the children as the API server reports them: who owns them, whether
they drifted from what is desired, the ``spec.replicas`` handover to an HPA, and which
ConfigMaps are stale."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flux_operator.render import (
    FIELD_MANAGER,
    INSTANCE_LABEL,
    KIND_LABEL,
    MANAGER,
    OWNER_LABEL,
    Owner,
)

HANDOVER_MANAGER = f"{MANAGER}-replicas-handover"


@dataclass(frozen=True)
class Children:
    """What the reconciler read from the cluster besides the resource itself (None: absent).

    ``config_maps`` are the ConfigMaps labelled as this resource's; None when they were
    not listed (then every presets ConfigMap the plan needs is taken to exist).
    """

    deployment: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    autoscaler: dict[str, Any] | None = None
    network_policy: dict[str, Any] | None = None
    config_maps: tuple[dict[str, Any], ...] | None = None
    canary_deployment: dict[str, Any] | None = None
    """``NAME-canary`` (strategy Canary)."""
    scaled_object: dict[str, Any] | None = None
    """KEDA's ScaledObject ``NAME``."""
    keda_installed: bool = False
    """KEDA's ScaledObject CRD is in the cluster."""

    def has_config_map(self, name: str) -> bool:
        if self.config_maps is None:
            return True
        return any(cm.get("metadata", {}).get("name") == name for cm in self.config_maps)


def config_map_selector(owner: Owner) -> dict[str, str]:
    """The labels of every ConfigMap the operator makes for ``owner``."""
    return {OWNER_LABEL: owner.name, INSTANCE_LABEL: owner.name}


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


def managed(obj: dict[str, Any]) -> bool:
    """Labelled as made by this operator."""
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGER


def owned_by(obj: dict[str, Any], owner: Owner) -> bool:
    """Made for ``owner``: its owner reference (or, for an owner without a uid, the label)."""
    if owner.uid is None:
        return managed(obj)
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)


def keda_owned(obj: dict[str, Any] | None, name: str) -> bool:
    """The HPA KEDA made (or took over) for the ScaledObject ``name``: the operator's
    ScaledObject's, not someone else's."""
    refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
    return any(r.get("kind") == "ScaledObject" and r.get("name") == name for r in refs)


def foreign_children(
    owner: Owner,
    children: Children,
    autoscaling: bool,
    network_policy: bool = False,
    keda: bool = False,
) -> list[str]:
    """``Kind name`` of each child that exists but belongs to something else (the HPA and
    the NetworkPolicy only count when the spec would make one; with ``keda`` the
    ScaledObject instead of the HPA, and never the HPA of the operator's ScaledObject)."""
    hpa = children.autoscaler
    if not autoscaling or keda or keda_owned(hpa, owner.name):
        hpa = None
    candidates: Iterable[dict[str, Any] | None] = (
        children.deployment,
        children.service,
        hpa,
        children.scaled_object if keda else None,
        children.network_policy if network_policy else None,
    )
    return [
        f"{obj['kind']} {owner.name}"
        for obj in candidates
        if obj is not None and not owned_by(obj, owner)
    ]


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


def stale_config_maps(
    config_maps: Iterable[dict[str, Any]], keep: set[str], blocklist: str | None
) -> list[str]:
    """Names of the operator's ConfigMaps no revision in the history needs (presets), or
    not the current one (blocklist)."""
    stale = []
    for cm in config_maps:
        meta = cm.get("metadata", {})
        labels = meta.get("labels", {})
        kind, name = labels.get(KIND_LABEL), meta["name"]
        unneeded = (kind == "presets" and name not in keep) or (
            kind == "blocklist" and name != blocklist
        )
        if unneeded and labels.get("app.kubernetes.io/managed-by") == MANAGER:
            stale.append(name)
    return stale


def blocklist_of(objects: Iterable[dict[str, Any]]) -> str | None:
    """The name of the blocklist ConfigMap among rendered ``objects`` (None: none)."""
    for obj in objects:
        if (
            obj["kind"] == "ConfigMap"
            and obj["metadata"].get("labels", {}).get(KIND_LABEL) == "blocklist"
        ):
            return str(obj["metadata"]["name"])
    return None

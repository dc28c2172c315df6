"""The objects of a canary, rendered from objects already rendered for one revision. Pure.

- The stable Deployment ``NAME`` carries ``fluxserve.dev/track: stable`` on its pods. Its
  selector stays as it is (a Deployment's selector is immutable). The label is rendered on
  every Deployment of strategy Canary, canary running or not: adding it only when a
  canary starts would restart every stable pod (RollingUpdate resources never get it).
- The canary Deployment ``NAME-canary`` is the new revision's Deployment, renamed, with
  ``track: canary`` in its selector and pods.
- Services ``NAME-stable`` and ``NAME-canary`` select one track each; ``NAME`` still
  selects both (its selector has no track).
- With ``spec.gateway``, the ``HTTPRoute`` ``NAME`` sends the step's weights to the two
  track Services (HTTP only: gRPC callers go through the Services).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from flux_operator.render.naming import Revision
from flux_operator.spec import GatewaySpec

TRACK_LABEL = "fluxserve.dev/track"
CANARY_SUFFIX = "-canary"
STABLE_SUFFIX = "-stable"
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
HTTP_PORT_NAME = "http"

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class CanaryRun:
    """What strategy Canary runs besides ``NAME``'s revision, as the reconcile step decided
    it (``flux_operator.reconcile.canary_rollout``)."""

    revision: Revision | None
    """The revision ``NAME-canary`` runs; None: no canary Deployment (delete it)."""
    weight: int = 0
    """The canary's share of the HTTPRoute's traffic, percent."""
    stable_replicas: int | None = None
    """``NAME``'s replicas while the canary runs; None: as rendered (or the HPA's)."""
    canary_replicas: int = 0
    hpa_reduction: int = 0
    """Pods the HPA's minReplicas and maxReplicas are lowered by (maxSurge 0 with
    autoscaling: the stable side gives them up to the canary)."""
    stable_surge: int | None = None
    """``NAME``'s rolling-update maxSurge while it rolls to a promoted canary (0: it
    replaces a pod at a time, maxUnavailable 1); None: as rendered."""


def canary_name(name: str) -> str:
    return name + CANARY_SUFFIX


def track_service_name(name: str, track: Track) -> str:
    return name + (CANARY_SUFFIX if track == "canary" else STABLE_SUFFIX)


def with_track(deployment: dict[str, Any], track: Track) -> dict[str, Any]:
    """A copy of a rendered Deployment whose pods carry the track label. The stable side's
    selector is left alone; only the canary's selector (a new object) includes the track."""
    out = copy.deepcopy(deployment)
    template_meta = out["spec"]["template"]["metadata"]
    template_meta["labels"] = {**template_meta.get("labels", {}), TRACK_LABEL: track}
    out["metadata"]["labels"] = {**out["metadata"].get("labels", {}), TRACK_LABEL: track}
    if track == "canary":
        selector = out["spec"]["selector"]["matchLabels"]
        out["spec"]["selector"]["matchLabels"] = {**selector, TRACK_LABEL: track}
    return out


def render_stable_deployment(
    deployment: dict[str, Any], replicas: int | None, surge: int | None = None
) -> dict[str, Any]:
    """The stable Deployment (the last Available revision's, as rendered) with its pods
    labelled stable and ``replicas`` (None: left to the HPA, as rendered); ``surge``, when
    given, is its rolling update's maxSurge (0: one pod unavailable at a time instead)."""
    out = with_track(deployment, "stable")
    if replicas is not None:
        out["spec"]["replicas"] = replicas
    if surge is not None:
        out["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0 if surge >= 1 else 1},
        }
    return out


def render_canary_deployment(deployment: dict[str, Any], replicas: int) -> dict[str, Any]:
    """``NAME-canary`` from the new revision's rendered Deployment ``NAME``."""
    out = with_track(deployment, "canary")
    out["metadata"]["name"] = canary_name(deployment["metadata"]["name"])
    # The canary always has its replicas set: no HPA targets it (the split decides).
    out["spec"]["replicas"] = replicas
    return out


def render_track_services(service: dict[str, Any]) -> list[dict[str, Any]]:
    """``NAME-stable`` and ``NAME-canary`` from the rendered Service ``NAME``."""
    services = []
    tracks: tuple[Track, ...] = ("stable", "canary")
    for track in tracks:
        out = copy.deepcopy(service)
        name = service["metadata"]["name"]
        out["metadata"]["name"] = track_service_name(name, track)
        out["metadata"]["labels"] = {**out["metadata"].get("labels", {}), TRACK_LABEL: track}
        out["spec"]["selector"] = {**out["spec"]["selector"], TRACK_LABEL: track}
        services.append(out)
    return services


def _http_port(service: dict[str, Any]) -> int:
    for port in service["spec"]["ports"]:
        if port.get("name") == HTTP_PORT_NAME:
            return int(port["port"])
    raise ValueError(f"service {service['metadata']['name']} has no port named http")


def _weights(canary_weight: int) -> tuple[tuple[Track, int], ...]:
    return (("stable", 100 - canary_weight), ("canary", canary_weight))


def render_http_route(
    service: dict[str, Any], gateway: GatewaySpec, canary_weight: int
) -> dict[str, Any]:
    """The ``HTTPRoute`` ``NAME``: all HTTP traffic to the two track Services, the canary
    taking ``canary_weight`` percent (0 between canaries). Metadata (namespace, labels,
    owner) is the rendered Service's."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight must be 0-100, got {canary_weight}")
    name = service["metadata"]["name"]
    port = _http_port(service)
    metadata: dict[str, Any] = {
        key: copy.deepcopy(value)
        for key, value in service["metadata"].items()
        if key in ("name", "namespace", "labels", "ownerReferences")
    }
    parent_refs = []
    for ref in gateway.parent_refs:
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
        parent["name"] = ref.name
        if ref.namespace is not None:
            parent["namespace"] = ref.namespace
        if ref.section_name is not None:
            parent["sectionName"] = ref.section_name
        parent_refs.append(parent)
    spec: dict[str, Any] = {"parentRefs": parent_refs}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {
                    "group": "",
                    "kind": "Service",
                    "name": track_service_name(name, track),
                    "port": port,
                    "weight": weight,
                }
                for track, weight in _weights(canary_weight)
            ],
        }
    ]
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": spec,
    }


def render_service_route(service: dict[str, Any], gateway: GatewaySpec) -> dict[str, Any]:
    """The ``HTTPRoute`` ``NAME`` of strategy RollingUpdate: all HTTP traffic to the
    Service ``NAME`` (there are no track Services to weigh)."""
    route = render_http_route(service, gateway, 0)
    port = _http_port(service)
    backend = {"group": "", "kind": "Service", "name": service["metadata"]["name"], "port": port}
    route["spec"]["rules"][0]["backendRefs"] = [{**backend, "weight": 100}]
    return route


def reduce_hpa(hpa: dict[str, Any], pods: int) -> dict[str, Any]:
    """The HPA with ``minReplicas`` and ``maxReplicas`` lowered by ``pods`` (at least 1),
    for a canary with ``maxSurge: 0`` under autoscaling: the stable side gives up the
    canary's pods through its HPA, which alone writes the stable Deployment's replicas."""
    if pods <= 0:
        return hpa
    out = copy.deepcopy(hpa)
    spec = out["spec"]
    spec["minReplicas"] = max(1, int(spec["minReplicas"]) - pods)
    spec["maxReplicas"] = max(spec["minReplicas"], int(spec["maxReplicas"]) - pods)
    return out

"""Every child of a FluxDeployment, in apply order (what ``render`` prints)."""

from __future__ import annotations

from typing import Any

from flux_operator.render.autoscaler import render_hpa
from flux_operator.render.config_maps import render_blocklist_config_map, render_presets_config_map
from flux_operator.render.deployment import render_deployment
from flux_operator.render.naming import Owner, Revision, desired_revision
from flux_operator.render.network_policy import render_network_policy
from flux_operator.render.service import render_service
from flux_operator.render_canary import (
    render_http_route,
    render_service_route,
    render_stable_deployment,
    render_track_services,
)
from flux_operator.spec import FluxDeploymentSpec


def render_all(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision | None = None
) -> list[dict[str, Any]]:
    """Every object, in apply order (ConfigMaps before the Deployment mounting them)."""
    revision = revision or desired_revision(owner, spec)
    objects: list[dict[str, Any]] = []
    if revision == desired_revision(owner, spec):
        objects.append(render_presets_config_map(owner, spec, revision))
    blocklist = render_blocklist_config_map(owner, spec)
    if blocklist is not None:
        objects.append(blocklist)
    deployment = render_deployment(owner, spec, revision)
    service = render_service(owner, spec)
    if spec.rollout.strategy == "Canary":
        # Between canaries: the stable side labelled, the track Services, the route all
        # on stable (what the operator keeps while no canary runs).
        objects.append(render_stable_deployment(deployment, None))
        objects.append(service)
        objects += render_track_services(service)
        if spec.gateway is not None:
            objects.append(render_http_route(service, spec.gateway, 0))
    else:
        objects += [deployment, service]
        if spec.gateway is not None:
            objects.append(render_service_route(service, spec.gateway))
    network_policy = render_network_policy(owner, spec)
    if network_policy is not None:
        objects.append(network_policy)
    hpa = render_hpa(owner, spec)
    if hpa is not None:
        objects.append(hpa)
    return objects

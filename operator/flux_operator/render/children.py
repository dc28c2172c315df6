"""Every child of a FluxDeployment, in apply order: what ``python -m flux_operator render``
prints and what the reconciler applies. One function for both, so that they cannot differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flux_operator.render import canary as tracks
from flux_operator.render.autoscaler import render_hpa
from flux_operator.render.canary import CanaryRun
from flux_operator.render.config_maps import render_blocklist_config_map, render_presets_config_map
from flux_operator.render.deployment import render_deployment
from flux_operator.render.naming import Owner, Revision, desired_revision
from flux_operator.render.network_policy import render_network_policy
from flux_operator.render.service import render_service
from flux_operator.spec import FluxDeploymentSpec


@dataclass(frozen=True)
class ChildObjects:
    """The children a FluxDeployment has now, and the ones it must not have."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    """In apply order: ConfigMaps before the Deployment that mounts them, then the canary
    Deployment, the Services, the route, the NetworkPolicy and the HPA. The ConfigMaps are
    immutable (``immutable: true``): created once, never applied again."""
    absent: list[tuple[str, str]] = field(default_factory=list)
    """``(kind, name)`` of the children this spec does not call for (a switched-off
    NetworkPolicy or HPA, a removed gateway's route, the canary Deployment between
    canaries): removed where the operator made them."""


def render_children(
    owner: Owner,
    spec: FluxDeploymentSpec,
    revision: Revision | None = None,
    canary: CanaryRun | None = None,
) -> ChildObjects:
    """The children of ``spec`` running ``revision`` (default: the spec's own), with the
    canary ``canary`` beside it (strategy Canary; None: no canary runs).

    The presets ConfigMap is the spec's own revision's, and only while that revision runs
    (on ``NAME`` or on ``NAME-canary``): an older revision mounts the one it left in the
    cluster.
    """
    desired = desired_revision(owner, spec)
    revision = revision or desired
    run = canary or CanaryRun(revision=None)
    children = ChildObjects()
    if desired in (revision, run.revision):
        children.objects.append(render_presets_config_map(owner, spec, desired))
    blocklist = render_blocklist_config_map(owner, spec)
    if blocklist is not None:
        children.objects.append(blocklist)
    _deployments(children, owner, spec, revision, run)
    service = render_service(owner, spec)
    children.objects.append(service)
    _routing(children, owner, spec, service, run)
    policy = render_network_policy(owner, spec)
    _optional(children, policy, ("NetworkPolicy", owner.name))
    hpa = render_hpa(owner, spec)
    if hpa is not None:
        hpa = tracks.reduce_hpa(hpa, run.hpa_reduction)
    _optional(children, hpa, ("HorizontalPodAutoscaler", owner.name))
    return children


def render_all(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision | None = None
) -> list[dict[str, Any]]:
    """Every object, in apply order, while no canary runs (what ``render`` prints)."""
    return render_children(owner, spec, revision).objects


def _optional(
    children: ChildObjects, obj: dict[str, Any] | None, otherwise: tuple[str, str]
) -> None:
    if obj is not None:
        children.objects.append(obj)
    else:
        children.absent.append(otherwise)


def _deployments(
    children: ChildObjects,
    owner: Owner,
    spec: FluxDeploymentSpec,
    revision: Revision,
    run: CanaryRun,
) -> None:
    """``NAME`` and, while a canary runs, ``NAME-canary``. With strategy Canary the stable
    side's pods are labelled, canary running or not."""
    deployment = render_deployment(owner, spec, revision)
    if spec.rollout.strategy == "Canary":
        deployment = tracks.render_stable_deployment(
            deployment, run.stable_replicas, run.stable_surge
        )
    children.objects.append(deployment)
    canary = None
    if run.revision is not None:
        rendered = render_deployment(owner, spec, run.revision)
        canary = tracks.render_canary_deployment(rendered, run.canary_replicas)
    _optional(children, canary, ("Deployment", tracks.canary_name(owner.name)))


def _routing(
    children: ChildObjects,
    owner: Owner,
    spec: FluxDeploymentSpec,
    service: dict[str, Any],
    run: CanaryRun,
) -> None:
    """The track Services (strategy Canary) and the HTTPRoute (with a gateway): all on
    stable between canaries."""
    canary_strategy = spec.rollout.strategy == "Canary"
    if canary_strategy:
        children.objects.extend(tracks.render_track_services(service))
    route = None
    if spec.gateway is not None and canary_strategy:
        route = tracks.render_http_route(service, spec.gateway, run.weight)
    elif spec.gateway is not None:
        route = tracks.render_service_route(service, spec.gateway)
    _optional(children, route, ("HTTPRoute", owner.name))

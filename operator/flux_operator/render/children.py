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
from flux_operator.render.front import (
    front_name,
    render_front_deployment,
    render_front_hpa,
    with_role,
)
from flux_operator.render.keda import render_scaled_object
from flux_operator.render.model_cache import render_model_cache_job, render_model_cache_pvc
from flux_operator.render.naming import Owner, Revision, desired_revision
from flux_operator.render.network_policy import render_network_policy
from flux_operator.render.service import render_service
from flux_operator.spec import FluxDeploymentSpec


@dataclass(frozen=True)
class ChildObjects:
    """The children a FluxDeployment has now, and the ones it must not have."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    """In apply order: ConfigMaps and the model cache (PVC, Job) before the Deployment that
    mounts them, then the canary Deployment, the fronts (``spec.queue``), the Services, the
    route, the NetworkPolicy and the autoscalers (the HPA, or KEDA's ScaledObjects; the
    fronts' HPA). The ConfigMaps are immutable (``immutable: true``): created once, never
    applied again."""
    absent: list[tuple[str, str]] = field(default_factory=list)
    """``(kind, name)`` of the children this spec does not call for (a switched-off
    NetworkPolicy or HPA, a removed gateway's route, the canary Deployment between
    canaries): removed where the operator made them."""


def render_children(
    owner: Owner,
    spec: FluxDeploymentSpec,
    revision: Revision | None = None,
    canary: CanaryRun | None = None,
    keda: bool = True,
) -> ChildObjects:
    """The children of ``spec`` running ``revision`` (default: the spec's own), with the
    canary ``canary`` beside it (strategy Canary; None: no canary runs). ``keda``: KEDA's
    ScaledObject CRD is installed (``render`` assumes it; the reconciler knows).

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
    if spec.model_cache is not None and spec.model_cache.image is None:
        children.objects.append(render_model_cache_pvc(owner, spec))
        children.objects.append(render_model_cache_job(owner, spec, desired))
    _deployments(children, owner, spec, revision, run, keda)
    service = render_service(owner, spec)
    children.objects.append(service)
    _routing(children, owner, spec, service, run)
    policy = render_network_policy(owner, spec)
    _optional(children, policy, ("NetworkPolicy", owner.name))
    _autoscalers(children, owner, spec, run, keda)
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


def _as_worker(deployment: dict[str, Any], spec: FluxDeploymentSpec, track: str) -> dict[str, Any]:
    """With a queue, the GPU pods are workers reading ``track`` only."""
    return deployment if spec.queue is None else with_role(deployment, spec, "worker", track)


def _keda(spec: FluxDeploymentSpec, keda: bool) -> bool:
    return keda and spec.autoscaling is not None and spec.autoscaling.keda


def _deployments(
    children: ChildObjects,
    owner: Owner,
    spec: FluxDeploymentSpec,
    revision: Revision,
    run: CanaryRun,
    keda: bool,
) -> None:
    """``NAME`` and, while a canary runs, ``NAME-canary``; with a queue, their fronts. With
    strategy Canary the stable side's pods are labelled, canary running or not."""
    worker = render_deployment(owner, spec, revision)
    deployment = _as_worker(worker, spec, "stable")
    if spec.rollout.strategy == "Canary":
        deployment = tracks.render_stable_deployment(
            deployment, run.stable_replicas, run.stable_surge
        )
    children.objects.append(deployment)
    canary, rendered = None, None
    if run.revision is not None:
        rendered = render_deployment(owner, spec, run.revision)
        canary_worker = _as_worker(rendered, spec, "canary")
        canary = tracks.render_canary_deployment(canary_worker, run.canary_replicas)
        if _keda(spec, keda):
            del canary["spec"]["replicas"]  # its own ScaledObject's
    _optional(children, canary, ("Deployment", tracks.canary_name(owner.name)))
    if spec.queue is not None:
        _fronts(children, owner, spec, worker, rendered)


def _fronts(
    children: ChildObjects,
    owner: Owner,
    spec: FluxDeploymentSpec,
    worker: dict[str, Any],
    canary_worker: dict[str, Any] | None,
) -> None:
    """``NAME-front`` (the stable track's) and, while a canary runs, ``NAME-canary-front``
    (the canary's revision, queueing on the canary track: one pod, the HTTPRoute's weights
    send it the canary's share)."""
    front = render_front_deployment(owner, spec, worker, "stable")
    if spec.rollout.strategy == "Canary":
        front = tracks.with_track(front, "stable")
    children.objects.append(front)
    name = front_name(tracks.canary_name(owner.name))
    canary = None
    if canary_worker is not None:
        canary = tracks.with_track(
            render_front_deployment(owner, spec, canary_worker, "canary"), "canary"
        )
        canary["metadata"]["name"] = name
        canary["spec"]["replicas"] = 1
    _optional(children, canary, ("Deployment", name))


def _autoscalers(
    children: ChildObjects, owner: Owner, spec: FluxDeploymentSpec, run: CanaryRun, keda: bool
) -> None:
    """The workers' HPA ``NAME``, or with KEDA a ScaledObject per track; the fronts' HPA
    with a queue. With KEDA the operator's HPA ``NAME`` is removed (applied before the
    removals, the ScaledObject names it for KEDA to take over: whichever comes first, the
    Deployment ends with KEDA's HPA alone; one KEDA has taken over is KEDA's, not ours)."""
    scaling = spec.autoscaling
    canary = tracks.canary_name(owner.name)
    stable_so, canary_so = None, None
    if scaling is not None and _keda(spec, keda):
        low, high = scaling.min_replicas, scaling.max_replicas
        cut = run.hpa_reduction  # maxSurge 0: the stable side gives the canary its pods
        bounds = (max(0, low - cut), max(1, low - cut, high - cut))
        stable_so = render_scaled_object(owner, spec, owner.name, "stable", bounds)
        if run.revision is not None:
            # The canary holds its share's pods (at least one: it is there to be measured).
            least = max(1, run.canary_replicas)
            canary_bounds = (least, max(least, high))
            canary_so = render_scaled_object(owner, spec, canary, "canary", canary_bounds)
        children.absent.append(("HorizontalPodAutoscaler", owner.name))
    else:
        hpa = render_hpa(owner, spec)
        if hpa is not None:
            hpa = tracks.reduce_hpa(hpa, run.hpa_reduction)
        _optional(children, hpa, ("HorizontalPodAutoscaler", owner.name))
    _optional(children, stable_so, ("ScaledObject", owner.name))
    _optional(children, canary_so, ("ScaledObject", canary))
    front_hpa = render_front_hpa(owner, spec) if spec.queue is not None else None
    _optional(children, front_hpa, ("HorizontalPodAutoscaler", front_name(owner.name)))


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

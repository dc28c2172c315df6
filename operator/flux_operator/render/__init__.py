"""Spec → the Kubernetes objects it turns into. Pure: no I/O, no clock, no environment.

The reconciler decides *which* revision runs (``Revision``: release, image, presets
ConfigMap) and what a canary runs beside it (``CanaryRun``); these functions say what that
looks like as Deployments, Services, an HTTPRoute, an HPA and ConfigMaps.
``children.render_children`` is the one list of them, in apply order: the reconciler
applies it and ``python -m flux_operator render FILE`` prints it.

One module per kind of object: ``naming`` (labels, names, annotations, ports, owner
references, the revision's identity) · ``pod`` (the server's command line, environment,
volumes, container) · ``deployment`` · ``service`` · ``autoscaler`` · ``config_maps`` ·
``network_policy`` · ``canary`` (the track labels and Services, the canary Deployment, the
HTTPRoute) · ``children`` (all of them, in apply order) · ``quality_job`` (the canary's
quality gate: a Job the analysis runs, not a child the reconciler keeps). A new kind of
child is a new module here, added to ``children.render_children``. The names every child
shares (mount points, ports, labels) are ``naming``'s; the package exports what the
reconciler and the CLI use.
"""

from flux_operator.render.autoscaler import render_hpa
from flux_operator.render.canary import (
    TRACK_LABEL,
    CanaryRun,
    canary_name,
    reduce_hpa,
    render_canary_deployment,
    render_http_route,
    render_service_route,
    render_stable_deployment,
    render_track_services,
    track_service_name,
)
from flux_operator.render.children import ChildObjects, render_all, render_children
from flux_operator.render.config_maps import render_blocklist_config_map, render_presets_config_map
from flux_operator.render.deployment import render_deployment
from flux_operator.render.naming import (
    ABORT_ANNOTATION,
    FIELD_MANAGER,
    INSTANCE_LABEL,
    KIND_LABEL,
    MANAGER,
    OWNER_LABEL,
    PROMOTE_ANNOTATION,
    ROLLBACK_ANNOTATION,
    Owner,
    Revision,
    common_labels,
    desired_revision,
    image_ref,
    label_value,
    presets_config_map_name,
    presets_hash,
    selector_labels,
    selector_string,
)
from flux_operator.render.network_policy import render_network_policy
from flux_operator.render.pod import performance_args, server_args, server_env
from flux_operator.render.service import render_service

__all__ = [
    "ABORT_ANNOTATION",
    "FIELD_MANAGER",
    "INSTANCE_LABEL",
    "KIND_LABEL",
    "MANAGER",
    "OWNER_LABEL",
    "PROMOTE_ANNOTATION",
    "ROLLBACK_ANNOTATION",
    "TRACK_LABEL",
    "CanaryRun",
    "ChildObjects",
    "Owner",
    "Revision",
    "canary_name",
    "common_labels",
    "desired_revision",
    "image_ref",
    "label_value",
    "performance_args",
    "presets_config_map_name",
    "presets_hash",
    "reduce_hpa",
    "render_all",
    "render_blocklist_config_map",
    "render_canary_deployment",
    "render_children",
    "render_deployment",
    "render_hpa",
    "render_http_route",
    "render_network_policy",
    "render_presets_config_map",
    "render_service",
    "render_service_route",
    "render_stable_deployment",
    "render_track_services",
    "selector_labels",
    "selector_string",
    "server_args",
    "server_env",
    "track_service_name",
]

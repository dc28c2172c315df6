"""Spec → the Kubernetes objects it turns into. Pure: no I/O, no clock, no environment.

The reconciler decides *which* revision runs (``Revision``: release, image, presets
ConfigMap); these functions say what that revision looks like as a Deployment, Service,
HPA and ConfigMaps. ``python -m flux_operator render FILE`` prints the same objects.

One module per kind of object: ``naming`` (labels, names, ports, owner references, the
revision's identity) · ``pod`` (the server's command line, environment, volumes,
container) · ``deployment`` · ``service`` · ``autoscaler`` · ``config_maps`` ·
``network_policy`` ·
``children`` (all of them, in apply order). A new kind (a second Deployment for a
canary, an HTTPRoute) is a new module here, added to ``children.render_all``.
"""

from flux_operator.render.autoscaler import render_hpa
from flux_operator.render.children import render_all
from flux_operator.render.config_maps import render_blocklist_config_map, render_presets_config_map
from flux_operator.render.deployment import render_deployment
from flux_operator.render.naming import (
    API_KEYS_DIR,
    APP_NAME,
    BLOCKLIST_FILE,
    BLOCKLIST_HASH_ANNOTATION,
    CACHE_DIR,
    FIELD_MANAGER,
    GRPC_PORT,
    HTTP_PORT,
    INSTANCE_LABEL,
    KIND_LABEL,
    LORA_CONFIGMAP_DIR,
    LORA_PVC_DIR,
    MANAGER,
    METRICS_PORT,
    MODEL_DIR,
    NAME_LABEL,
    OWNER_LABEL,
    PRESETS_DIR,
    PRESETS_HASH_ANNOTATION,
    PRESTOP_SLEEP_SECONDS,
    REVISION_ANNOTATION,
    ROLLBACK_ANNOTATION,
    SAFETY_DIR,
    STARTUP_FAILURE_THRESHOLD,
    STARTUP_PERIOD_SECONDS,
    Owner,
    Revision,
    blocklist_config_map_name,
    blocklist_hash,
    common_labels,
    desired_revision,
    image_ref,
    presets_config_map_name,
    presets_files,
    presets_hash,
    selector_labels,
    selector_string,
)
from flux_operator.render.network_policy import render_network_policy
from flux_operator.render.pod import server_args, server_env
from flux_operator.render.service import render_service

__all__ = [
    "API_KEYS_DIR",
    "APP_NAME",
    "BLOCKLIST_FILE",
    "BLOCKLIST_HASH_ANNOTATION",
    "CACHE_DIR",
    "FIELD_MANAGER",
    "GRPC_PORT",
    "HTTP_PORT",
    "INSTANCE_LABEL",
    "KIND_LABEL",
    "LORA_CONFIGMAP_DIR",
    "LORA_PVC_DIR",
    "MANAGER",
    "METRICS_PORT",
    "MODEL_DIR",
    "NAME_LABEL",
    "OWNER_LABEL",
    "PRESETS_DIR",
    "PRESETS_HASH_ANNOTATION",
    "PRESTOP_SLEEP_SECONDS",
    "REVISION_ANNOTATION",
    "ROLLBACK_ANNOTATION",
    "SAFETY_DIR",
    "STARTUP_FAILURE_THRESHOLD",
    "STARTUP_PERIOD_SECONDS",
    "Owner",
    "Revision",
    "blocklist_config_map_name",
    "blocklist_hash",
    "common_labels",
    "desired_revision",
    "image_ref",
    "presets_config_map_name",
    "presets_files",
    "presets_hash",
    "render_all",
    "render_blocklist_config_map",
    "render_deployment",
    "render_hpa",
    "render_network_policy",
    "render_presets_config_map",
    "render_service",
    "selector_labels",
    "selector_string",
    "server_args",
    "server_env",
]

"""The Deployment that runs one revision of the server."""

from __future__ import annotations

from typing import Any

from flux_operator.render.model_cache import wait_for_cache
from flux_operator.render.naming import (
    BLOCKLIST_HASH_ANNOTATION,
    METRICS_PORT,
    PRESETS_HASH_ANNOTATION,
    PRESTOP_SLEEP_SECONDS,
    Owner,
    Revision,
    blocklist_hash,
    common_labels,
    object_metadata,
    revision_loras,
    selector_labels,
)
from flux_operator.render.pod import LOG_HINT_ANNOTATIONS, pod_volumes, server_container
from flux_operator.render.pod_basics import place, restricted_pod
from flux_operator.spec import FluxDeploymentSpec


def _pod_annotations(spec: FluxDeploymentSpec, revision: Revision) -> dict[str, str]:
    annotations = {
        PRESETS_HASH_ANNOTATION: revision.presets_hash,
        "kubectl.kubernetes.io/default-container": "server",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
        **LOG_HINT_ANNOTATIONS,
    }
    digest = blocklist_hash(spec)
    if digest is not None:
        annotations[BLOCKLIST_HASH_ANNOTATION] = digest
    return annotations


def render_deployment(owner: Owner, spec: FluxDeploymentSpec, revision: Revision) -> dict[str, Any]:
    # The revision's adapters, not the spec's: a rollback restores those it ran with.
    spec = spec.model_copy(update={"loras": revision_loras(revision)})
    volumes, _ = pod_volumes(owner, spec, revision)
    labels = common_labels(owner, revision.release)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.rollout.drain_timeout_seconds
        + PRESTOP_SLEEP_SECONDS
        + 10,
        "securityContext": restricted_pod(),
        "containers": [server_container(owner, spec, revision)],
        "volumes": volumes,
    }
    waiting = wait_for_cache(spec, revision.image)
    if waiting is not None:
        pod_spec["initContainers"] = [waiting]
    place(pod_spec, spec.gpu, spec.image_pull_secrets)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner)},
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": spec.rollout.revision_history_limit,
        # A GPU pod takes minutes to load: keep serving on the old pod until the new one is
        # ready (maxUnavailable 0), one extra pod at a time.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": labels, "annotations": _pod_annotations(spec, revision)},
            "spec": pod_spec,
        },
    }
    # With autoscaling the HPA owns .spec.replicas; leaving it out means we never fight it.
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(owner, owner.name, labels),
        "spec": deployment_spec,
    }

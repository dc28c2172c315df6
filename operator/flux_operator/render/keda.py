"""A KEDA ``ScaledObject`` (keda.sh/v1alpha1) for the workers of one release track: what
lets them go to zero while the fronts hold the requests, and come back when work waits.

Triggers, and why these:

- ``metrics-api`` on the fronts' ``GET /queue``, ``tracks.<track>.high`` and ``.normal``:
  the entries waiting on this track, summed by the server over the track's streams. KEDA's
  ``redis-streams`` scaler reads one named stream (and its consumer group) per trigger, but
  the queue has a stream per API key (``fluxserve:queue:<track>:<priority>:<key>``, keys
  come and go), so no fixed list of redis-streams triggers covers a track; ``GET /queue``
  reads the same streams and needs no Redis credentials in KEDA. The fronts are always up
  (CPU), so the count is there while no worker runs. Two triggers (per priority) give the
  HPA the larger of the two ratios, not their sum: a small under-count under mixed load.
  Until the first request ever reaches a track, the track is absent from ``/queue`` and
  the trigger errors: the ``fallback`` then holds one worker.
- ``prometheus`` (with ``autoscaling.prometheusUrl``): the track's running requests
  (``fluxserve_requests_running``). The queue does not show work already in a batch: a
  worker busy with one long batch and an empty queue would otherwise be scaled away.

The HPA KEDA makes is named like ours (``advanced.horizontalPodAutoscalerConfig.name``),
and ``scaledobject.keda.sh/transfer-hpa-ownership`` lets KEDA take over the HPA ``NAME``
the operator made before: the Deployment never has two autoscalers.
"""

from __future__ import annotations

from typing import Any

from flux_operator.render.autoscaler import hpa_behavior
from flux_operator.render.naming import HTTP_PORT, Owner, common_labels, object_metadata
from flux_operator.spec import FluxDeploymentSpec

KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_CRD = "scaledobjects.keda.sh"
"""The CRD whose presence says KEDA is installed (status condition ScaleToZero)."""
TRANSFER_ANNOTATION = "scaledobject.keda.sh/transfer-hpa-ownership"
PRIORITIES = ("high", "normal")  # the tracks' entries in GET /queue (flux_server.queue.names)


def _queue_triggers(owner: Owner, spec: FluxDeploymentSpec, track: str) -> list[dict[str, Any]]:
    scaling = spec.autoscaling
    assert scaling is not None
    namespace = owner.namespace or "default"
    url = f"http://{owner.name}.{namespace}.svc:{HTTP_PORT}/queue"
    return [
        {
            "type": "metrics-api",
            "name": f"queue-{priority}",
            "metricType": "AverageValue",
            "metadata": {
                "url": url,
                "format": "json",
                "valueLocation": f"tracks.{track}.{priority}",
                "targetValue": str(scaling.target_queue_depth),
                "activationTargetValue": str(scaling.activation_queue_depth),
            },
        }
        for priority in PRIORITIES
    ]


def _running_trigger(owner: Owner, spec: FluxDeploymentSpec, track: str) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None and scaling.prometheus_url is not None
    # Pods of strategy RollingUpdate carry no track label: "not canary" is the stable side.
    matcher = 'track="canary"' if track == "canary" else 'track!="canary"'
    labels = f'namespace="{owner.namespace or "default"}",fluxdeployment="{owner.name}",{matcher}'
    return {
        "type": "prometheus",
        "name": "running",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": scaling.prometheus_url,
            "query": f"sum(fluxserve_requests_running{{{labels}}}) or vector(0)",
            # A worker is busy at a full batch: one per maxBatchSize requests running.
            "threshold": str(spec.batching.max_batch_size),
            "activationThreshold": "0",
        },
    }


def render_scaled_object(
    owner: Owner,
    spec: FluxDeploymentSpec,
    target: str,
    track: str,
    replicas: tuple[int, int],
) -> dict[str, Any]:
    """The ScaledObject named like the worker Deployment ``target`` it scales, on
    ``track``'s work, between ``replicas`` (min, max)."""
    scaling = spec.autoscaling
    assert scaling is not None
    triggers = _queue_triggers(owner, spec, track)
    if scaling.prometheus_url is not None:
        triggers.append(_running_trigger(owner, spec, track))
    annotations = {TRANSFER_ANNOTATION: "true"}
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": object_metadata(owner, target, common_labels(owner), annotations),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "pollingInterval": scaling.polling_interval_seconds,
            "cooldownPeriod": scaling.cooldown_seconds,
            "minReplicaCount": replicas[0],
            "maxReplicaCount": replicas[1],
            # The queue unreadable three polls running (the fronts or Redis down, or a
            # track no request has reached yet): keep the workers there are, at least
            # one, rather than scale blind.
            "fallback": {
                "failureThreshold": 3,
                "replicas": max(1, replicas[0]),
                "behavior": "currentReplicasIfHigher",
            },
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "name": target,
                    "behavior": hpa_behavior(scaling),
                },
            },
            "triggers": triggers,
        },
    }

"""The fleet of ``spec.queue``: the ``NAME-front`` Deployment (admission, REST and gRPC on
CPUs, no model) and its HPA, and the server flags that make ``NAME`` (and ``NAME-canary``)
GPU workers pulling from the queue. Pure: each function takes objects already rendered.

- Front pods are labelled ``app.kubernetes.io/name: fluxserve-front``, so no selector of the
  GPU Deployment (immutable, ``fluxserve-server``) ever covers them; with a queue the
  Services select the fronts, the only pods that take requests.
- A release track is a queue track: a front queues on its own (``--track``), a worker reads
  only its own. While a canary runs, ``NAME-canary-front`` (the canary's revision) queues on
  ``canary`` and ``NAME-canary``'s workers read only that stream, so the canary analysis
  compares requests that the canary's code both admitted and generated. The track Services
  and the HTTPRoute send the canary's share to its fronts, as they sent it to its pods.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from flux_operator.render.naming import (
    INSTANCE_LABEL,
    NAME_LABEL,
    Owner,
    common_labels,
    object_metadata,
)
from flux_operator.spec import FluxDeploymentSpec

FRONT_APP_NAME = "fluxserve-front"
FRONT_SUFFIX = "-front"
QUEUE_ENV = "FLUXSERVE_QUEUE"
QUEUE_PASSWORD_ENV = "FLUXSERVE_QUEUE_PASSWORD"
# What a front needs of the pod's volumes: admission (presets, blocklist, keys, and the
# adapters, whose files it checks at start) and scratch; never /dev/shm or the weights.
_FRONT_VOLUMES = frozenset({"tmp", "cache", "presets", "safety", "api-keys"})


def _front_volume(spec: FluxDeploymentSpec, name: str) -> bool:
    if name in _FRONT_VOLUMES or name.startswith("lora-"):
        return True
    # An adapter at a path under the model's volume needs that volume.
    return name == "model" and any(lora.path is not None for lora in spec.loras)


Role = Literal["front", "worker"]


def front_name(deployment_name: str) -> str:
    """``NAME-front`` for ``NAME``; ``NAME-canary-front`` for ``NAME-canary``."""
    return deployment_name + FRONT_SUFFIX


def front_selector(owner: Owner) -> dict[str, str]:
    return {NAME_LABEL: FRONT_APP_NAME, INSTANCE_LABEL: owner.name}


def queue_args(spec: FluxDeploymentSpec, role: Role, track: str) -> list[str]:
    """The flags of one role on one track (the URL itself: a flag when plain, else the
    environment from the Secret)."""
    queue = spec.queue
    assert queue is not None
    args = [f"--queue={queue.url}"] if queue.url is not None else []
    args += [f"--role={role}", f"--track={track}"]
    if queue.visibility_timeout_seconds is not None:
        args.append(f"--visibility-timeout={queue.visibility_timeout_seconds}")
    return args


def queue_env(spec: FluxDeploymentSpec) -> list[dict[str, Any]]:
    queue = spec.queue
    assert queue is not None
    env = []
    for name, ref in (
        (QUEUE_ENV, queue.url_secret_ref),
        (QUEUE_PASSWORD_ENV, queue.password_secret_ref),
    ):
        if ref is not None:
            secret = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
            env.append({"name": name, "valueFrom": secret})
    return env


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "server")


def with_role(
    deployment: dict[str, Any], spec: FluxDeploymentSpec, role: Role, track: str
) -> dict[str, Any]:
    """A copy of a rendered server Deployment whose server runs ``role`` on ``track``."""
    out = copy.deepcopy(deployment)
    server = _server(out)
    server["args"] = [*server["args"], *queue_args(spec, role, track)]
    server["env"] = [*server["env"], *queue_env(spec)]
    return out


def render_front_deployment(
    owner: Owner, spec: FluxDeploymentSpec, worker: dict[str, Any], track: str
) -> dict[str, Any]:
    """The fronts of the revision ``worker`` (the rendered GPU Deployment, before its role)
    runs: the same image, presets and admission flags, on CPUs, without the model's volumes,
    and without replicas (the fronts' HPA owns them)."""
    queue = spec.queue
    assert queue is not None
    out = with_role(worker, spec, "front", track)
    name = front_name(worker["metadata"]["name"])
    release = worker["metadata"]["labels"].get("app.kubernetes.io/version")
    # The component stays inference-server: the PodMonitor (deploy/monitoring) scrapes the
    # fronts too, whose request metrics the dashboards and the canary analysis read.
    labels = {**common_labels(owner), **front_selector(owner)}
    if release is not None:
        labels["app.kubernetes.io/version"] = release
    out["metadata"] = object_metadata(owner, name, labels)
    template = out["spec"]["template"]
    template["metadata"]["labels"] = dict(labels)
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "initContainers"):
        pod.pop(key, None)
    pod["volumes"] = [v for v in pod["volumes"] if _front_volume(spec, v["name"])]
    server = _server(out)
    server["volumeMounts"] = [m for m in server["volumeMounts"] if _front_volume(spec, m["name"])]
    resources = {"cpu": queue.front.cpu, "memory": queue.front.memory}
    server["resources"] = {"requests": resources, "limits": {"memory": queue.front.memory}}
    # A front loads no model: it is ready in seconds, the GPU pods' patience is not needed.
    server["startupProbe"] = {**server["startupProbe"], "failureThreshold": 30}
    out["spec"]["selector"] = {"matchLabels": front_selector(owner)}
    out["spec"].pop("replicas", None)
    out["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    return out


def render_front_hpa(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    """``NAME-front``'s HPA: CPU, the fronts' work (admission, encoding, waiting clients)."""
    queue = spec.queue
    assert queue is not None
    name = front_name(owner.name)
    labels = common_labels(owner)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(owner, name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": queue.front.replicas,
            "maxReplicas": queue.front.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": queue.front.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }

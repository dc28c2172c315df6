"""Spec → the Kubernetes objects it turns into. Pure: no I/O, no clock, no environment.

The reconciler decides *which* revision runs (``Revision``: release, image, presets
ConfigMap); these functions say what that revision looks like as a Deployment, Service,
HPA and ConfigMaps. ``python -m flux_operator render FILE`` prints the same objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from flux_client.presets import presets_to_files
from flux_operator.performance import performance_args
from flux_operator.spec import GROUP, KIND, VERSION, FluxDeploymentSpec

HTTP_PORT = 8080
GRPC_PORT = 50051
METRICS_PORT = 9090

MODEL_DIR = "/models"
PRESETS_DIR = "/etc/fluxserve/presets"
SAFETY_DIR = "/etc/fluxserve/safety"
API_KEYS_DIR = "/etc/fluxserve/api-keys"
LORA_CONFIGMAP_DIR = "/etc/fluxserve/loras"
LORA_PVC_DIR = "/loras"
CACHE_DIR = "/cache"
BLOCKLIST_FILE = "blocklist.txt"

MANAGER = "fluxserve-operator"
APP_NAME = "fluxserve-server"
INSTANCE_LABEL = "app.kubernetes.io/instance"
NAME_LABEL = "app.kubernetes.io/name"
OWNER_LABEL = f"{GROUP}/fluxdeployment"
KIND_LABEL = f"{GROUP}/config"
PRESETS_HASH_ANNOTATION = f"{GROUP}/presets-hash"
BLOCKLIST_HASH_ANNOTATION = f"{GROUP}/blocklist-hash"
REVISION_ANNOTATION = f"{GROUP}/revision"
ROLLBACK_ANNOTATION = f"{GROUP}/rollback-to"

# Long enough for a rolling update to empty the Service's endpoints before SIGTERM.
PRESTOP_SLEEP_SECONDS = 5
# 24 GB of weights from a network volume can take many minutes: 10 s x 180 = 30 min.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180


@dataclass(frozen=True)
class Owner:
    """The FluxDeployment the children belong to."""

    name: str
    namespace: str | None = None
    uid: str | None = None


@dataclass(frozen=True)
class Revision:
    """What one revision runs: the code (image) and the presets, restored together."""

    release: str
    image: str
    presets_hash: str
    presets_config_map: str


def _hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def image_ref(spec: FluxDeploymentSpec) -> str:
    """The image to run: ``image`` as written when it pins a tag or digest, else
    ``image:release``."""
    last = spec.image.rsplit("/", 1)[-1]
    if "@" in spec.image or ":" in last:
        return spec.image
    return f"{spec.image}:{spec.release}"


def presets_files(spec: FluxDeploymentSpec) -> dict[str, str]:
    return presets_to_files(spec.style_presets)


def presets_hash(spec: FluxDeploymentSpec) -> str:
    return _hash(presets_files(spec))


def presets_config_map_name(owner_name: str, digest: str) -> str:
    return f"{owner_name}-presets-{digest}"


def blocklist_config_map_name(owner_name: str, digest: str) -> str:
    return f"{owner_name}-blocklist-{digest}"


def blocklist_hash(spec: FluxDeploymentSpec) -> str | None:
    if spec.safety is None or spec.safety.blocklist is None:
        return None
    return _hash(spec.safety.blocklist)


def desired_revision(owner: Owner, spec: FluxDeploymentSpec) -> Revision:
    """The revision the spec asks for (before any rollback)."""
    digest = presets_hash(spec)
    return Revision(
        release=spec.release,
        image=image_ref(spec),
        presets_hash=digest,
        presets_config_map=presets_config_map_name(owner.name, digest),
    )


def selector_labels(owner: Owner) -> dict[str, str]:
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: owner.name}


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(owner).items())


def _label_value(value: str) -> str:
    # Label values: 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return cleaned.strip("._-") or "unknown"


def common_labels(owner: Owner, release: str | None = None) -> dict[str, str]:
    labels = {
        **selector_labels(owner),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "fluxserve",
        "app.kubernetes.io/managed-by": MANAGER,
        OWNER_LABEL: owner.name,
    }
    if release is not None:
        labels["app.kubernetes.io/version"] = _label_value(release)
    return labels


def _metadata(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner.namespace:
        meta["namespace"] = owner.namespace
    if annotations:
        meta["annotations"] = annotations
    if owner.uid:
        # The reference kopf.adopt() would add, rendered here so that rendering stays pure
        # and `render` shows it; without a uid (`render` of a file) there is no owner yet.
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


# --- ConfigMaps ---------------------------------------------------------------------------


def render_presets_config_map(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision
) -> dict[str, Any]:
    """The immutable presets ConfigMap of a revision (only for the spec's own presets: a
    rollback reuses the one already in the cluster)."""
    labels = {**common_labels(owner), KIND_LABEL: "presets"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            owner,
            revision.presets_config_map,
            labels,
            {PRESETS_HASH_ANNOTATION: revision.presets_hash},
        ),
        "immutable": True,
        "data": presets_files(spec),
    }


def render_blocklist_config_map(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any] | None:
    digest = blocklist_hash(spec)
    if digest is None or spec.safety is None or spec.safety.blocklist is None:
        return None
    labels = {**common_labels(owner), KIND_LABEL: "blocklist"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, blocklist_config_map_name(owner.name, digest), labels),
        "immutable": True,
        "data": {BLOCKLIST_FILE: "".join(f"{term}\n" for term in spec.safety.blocklist)},
    }


# --- the pod ------------------------------------------------------------------------------


def _lora_path(spec: FluxDeploymentSpec, index: int) -> str:
    lora = spec.loras[index]
    if lora.path is not None:
        return f"{MODEL_DIR}/{lora.path}"
    if lora.config_map is not None:
        return f"{LORA_CONFIGMAP_DIR}/{lora.name}"
    return f"{LORA_PVC_DIR}/{lora.name}"


def _scale(value: float) -> str:
    return format(value, "g")


def server_args(spec: FluxDeploymentSpec, revision: Revision) -> list[str]:
    """The server's command line (the image's entrypoint is ``python -m flux_server``)."""
    model = MODEL_DIR if spec.model.source.pvc is not None else spec.model.id
    args = [
        f"--model={model}",
        "--host=0.0.0.0",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--device={'cuda' if spec.gpu.count > 0 else 'cpu'}",
        f"--dtype={spec.model.dtype}",
        f"--max-batch-size={spec.batching.max_batch_size}",
        f"--max-delay-ms={spec.batching.max_delay_ms}",
        f"--max-queue={spec.batching.max_queue}",
        f"--presets-dir={PRESETS_DIR}",
        f"--release={revision.release}",
        f"--drain-timeout={spec.rollout.drain_timeout_seconds}",
        f"--log-level={spec.log_level}",
    ]
    if spec.model.revision is not None:
        args.append(f"--model-revision={spec.model.revision}")
    for i, lora in enumerate(spec.loras):
        args.append(f"--lora={lora.name}={_lora_path(spec, i)}:{_scale(lora.scale)}")
    if spec.safety is not None:
        if spec.safety.blocklist is not None or spec.safety.blocklist_config_map_ref is not None:
            args.append(f"--blocklist={SAFETY_DIR}/{BLOCKLIST_FILE}")
        if spec.safety.model is not None:
            args.append(f"--safety-model={spec.safety.model}")
        if spec.safety.threshold is not None:
            args.append(f"--safety-threshold={_scale(spec.safety.threshold)}")
    if spec.audit.enabled:
        # stdout: the cluster's log pipeline keeps it, and the pod needs no writable volume.
        args.append("--audit-log=-")
        if spec.audit.hash_prompts:
            args.append("--audit-hash-prompts")
    if spec.api_keys is not None:
        args.append(f"--api-keys={API_KEYS_DIR}/{spec.api_keys.key}")
    if spec.cache is not None:
        if spec.cache.redis_url is not None:
            args.append(f"--redis-url={spec.cache.redis_url}")
        if spec.cache.bytes is not None:
            args.append(f"--cache-bytes={spec.cache.bytes}")
        if spec.cache.ttl_seconds is not None:
            args.append(f"--cache-ttl={spec.cache.ttl_seconds}")
    if spec.editing.enabled:
        args.append("--enable-editing")
        if spec.editing.kontext_model is not None:
            args.append(f"--kontext-model={spec.editing.kontext_model}")
    if spec.vqa is not None:
        args.append(f"--vqa-model={spec.vqa.model}")
    if spec.max_image_pixels is not None:
        args.append(f"--max-image-pixels={spec.max_image_pixels}")
    args += performance_args(spec.performance)
    return args


def server_env(spec: FluxDeploymentSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]
    if spec.model.source.pvc is not None:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    hub = spec.model.source.hub
    if hub is not None and hub.token_secret_ref is not None:
        ref = hub.token_secret_ref
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    if spec.cache is not None and spec.cache.redis_url_secret_ref is not None:
        ref = spec.cache.redis_url_secret_ref
        env.append(
            {
                "name": "FLUXSERVE_REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    return env


def _volumes(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "presets", "configMap": {"name": revision.presets_config_map}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "presets", "mountPath": PRESETS_DIR, "readOnly": True},
    ]
    pvc = spec.model.source.pvc
    if pvc is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True},
            }
        )
        mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        mounts.append(mount)
    for i, lora in enumerate(spec.loras):
        volume_name = f"lora-{i}"
        if lora.config_map is not None:
            volumes.append({"name": volume_name, "configMap": {"name": lora.config_map}})
        elif lora.pvc is not None:
            volumes.append(
                {
                    "name": volume_name,
                    "persistentVolumeClaim": {"claimName": lora.pvc.claim_name, "readOnly": True},
                }
            )
        else:
            continue  # a path under the model volume needs no volume of its own
        lora_mount: dict[str, Any] = {
            "name": volume_name,
            "mountPath": _lora_path(spec, i),
            "readOnly": True,
        }
        if lora.pvc is not None and lora.pvc.sub_path:
            lora_mount["subPath"] = lora.pvc.sub_path
        mounts.append(lora_mount)
    safety = spec.safety
    if safety is not None and (safety.blocklist is not None or safety.blocklist_config_map_ref):
        if safety.blocklist_config_map_ref is not None:
            ref = safety.blocklist_config_map_ref
            source = {"name": ref.name, "items": [{"key": ref.key, "path": BLOCKLIST_FILE}]}
        else:
            source = {"name": blocklist_config_map_name(owner.name, blocklist_hash(spec) or "")}
        volumes.append({"name": "safety", "configMap": source})
        mounts.append({"name": "safety", "mountPath": SAFETY_DIR, "readOnly": True})
    if spec.api_keys is not None:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {"secretName": spec.api_keys.secret_name, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return volumes, mounts


def _container(owner: Owner, spec: FluxDeploymentSpec, revision: Revision) -> dict[str, Any]:
    _, mounts = _volumes(owner, spec, revision)
    limits: dict[str, str] = {"memory": spec.resources.memory}
    if spec.gpu.count > 0:
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    return {
        "name": "server",
        "image": revision.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": server_args(spec, revision),
        "env": server_env(spec),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
            "limits": limits,
        },
        # gRPC health says NOT_SERVING until the weights are loaded and warmed: the startup
        # probe waits for that, patiently, before liveness may restart the pod.
        "startupProbe": {
            "grpc": {"port": GRPC_PORT},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": STARTUP_FAILURE_THRESHOLD,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
            "timeoutSeconds": 5,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def render_deployment(owner: Owner, spec: FluxDeploymentSpec, revision: Revision) -> dict[str, Any]:
    volumes, _ = _volumes(owner, spec, revision)
    labels = common_labels(owner, revision.release)
    template_annotations = {
        PRESETS_HASH_ANNOTATION: revision.presets_hash,
        "kubectl.kubernetes.io/default-container": "server",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    digest = blocklist_hash(spec)
    if digest is not None:
        template_annotations[BLOCKLIST_HASH_ANNOTATION] = digest
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.rollout.drain_timeout_seconds
        + PRESTOP_SLEEP_SECONDS
        + 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(owner, spec, revision)],
        "volumes": volumes,
    }
    if spec.gpu.node_selector:
        pod_spec["nodeSelector"] = dict(spec.gpu.node_selector)
    if spec.gpu.count > 0:
        pod_spec["tolerations"] = [
            {"key": spec.gpu.taint_key, "operator": "Exists", "effect": "NoSchedule"}
        ]
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
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
            "metadata": {"labels": labels, "annotations": template_annotations},
            "spec": pod_spec,
        },
    }
    # With autoscaling the HPA owns .spec.replicas; leaving it out means we never fight it.
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, owner.name, labels),
        "spec": deployment_spec,
    }


def render_service(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, common_labels(owner)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def render_hpa(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any] | None:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, owner.name, common_labels(owner)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "fluxserve_queue_depth"},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(scaling.target_queue_depth),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                },
            },
        },
    }


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
    objects.append(render_deployment(owner, spec, revision))
    objects.append(render_service(owner, spec))
    hpa = render_hpa(owner, spec)
    if hpa is not None:
        objects.append(hpa)
    return objects

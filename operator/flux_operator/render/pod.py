"""The server's pod: its command line, environment, volumes and container."""

from __future__ import annotations

from typing import Any

from flux_operator.render.model_cache import (
    COMPILE_CACHE_DIR,
    MODEL_CACHE_DIR,
    compile_cache_dir,
    model_cache_volume,
    model_path,
    startup_failure_threshold,
)
from flux_operator.render.naming import (
    API_KEYS_DIR,
    BLOCKLIST_FILE,
    CACHE_DIR,
    GRPC_PORT,
    HTTP_PORT,
    LORA_CONFIGMAP_DIR,
    LORA_PVC_DIR,
    METRICS_PORT,
    MODEL_DIR,
    PRESETS_DIR,
    PRESTOP_SLEEP_SECONDS,
    SAFETY_DIR,
    SERVER_PORTS,
    STARTUP_PERIOD_SECONDS,
    Owner,
    Revision,
    blocklist_config_map_name,
    blocklist_hash,
)
from flux_operator.render.pod_basics import restricted_container
from flux_operator.spec import FluxDeploymentSpec, PerformanceSpec

#: Filebeat's hints-based autodiscover reads these on the pod: the server writes one
#: Elastic Common Schema document a line (its log on stderr, the audit log on stdout),
#: decoded as Elastic's ecs-logging guide says, then put through the ingest pipeline
#: of deploy/elk (ingest-pipeline.json, loaded as "fluxserve-logs").
LOG_HINT_ANNOTATIONS: dict[str, str] = {
    "co.elastic.logs/enabled": "true",
    "co.elastic.logs/json.overwrite_keys": "true",
    "co.elastic.logs/json.add_error_key": "true",
    "co.elastic.logs/json.expand_keys": "true",
    "co.elastic.logs/pipeline": "fluxserve-logs",
}


def _lora_path(spec: FluxDeploymentSpec, index: int) -> str:
    lora = spec.loras[index]
    if lora.path is not None:
        return f"{MODEL_DIR}/{lora.path}"
    if lora.config_map is not None:
        return f"{LORA_CONFIGMAP_DIR}/{lora.name}"
    if lora.uri is not None:
        return lora.uri  # fetched by the server itself
    return f"{LORA_PVC_DIR}/{lora.name}"


def _scale(value: float) -> str:
    return format(value, "g")


def server_args(spec: FluxDeploymentSpec, revision: Revision) -> list[str]:
    """The server's command line (the image's entrypoint is ``python -m flux_server``)."""
    model = MODEL_DIR if spec.model.source.pvc is not None else spec.model.id
    if spec.model_cache is not None:
        model = model_path(spec)
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
    return args + _feature_args(spec) + performance_args(spec.performance)


def _optional(*flags: tuple[str, object | None]) -> list[str]:
    """``FLAG=VALUE`` for each value that is set (None: left to the server's default)."""
    return [f"{flag}={value}" for flag, value in flags if value is not None]


def _feature_args(spec: FluxDeploymentSpec) -> list[str]:
    """The flags of the optional parts of the spec, in a fixed order (a new order would
    restart every pod)."""
    # --batch-wait only when not the server's default: an operator upgrade must not change
    # (and so restart) the pods of every FluxDeployment that leaves it unset.
    wait = spec.batching.wait if spec.batching.wait != "when-busy" else None
    args = _optional(("--batch-wait", wait), ("--model-revision", spec.model.revision))
    for i, lora in enumerate(spec.loras):
        args.append(f"--lora={lora.name}={_lora_path(spec, i)}:{_scale(lora.scale)}")
    # The server refuses an adapter file whose digest differs (a promoted adapter's).
    args += [f"--lora-sha256={lora.name}={lora.sha256}" for lora in spec.loras if lora.sha256]
    safety = spec.safety
    if safety is not None:
        listed = safety.blocklist is not None or safety.blocklist_config_map_ref is not None
        args += _optional(
            ("--blocklist", f"{SAFETY_DIR}/{BLOCKLIST_FILE}" if listed else None),
            ("--safety-model", safety.model),
            ("--safety-threshold", None if safety.threshold is None else _scale(safety.threshold)),
            ("--image-safety-model", safety.image_model),
            (
                "--image-safety-threshold",
                None if safety.image_threshold is None else _scale(safety.image_threshold),
            ),
        )
    if spec.audit.enabled:
        # stdout: the cluster's log pipeline keeps it, and the pod needs no writable volume.
        args.append("--audit-log=-")
        if spec.audit.hash_prompts:
            args.append("--audit-hash-prompts")
    if spec.api_keys is not None:
        args.append(f"--api-keys={API_KEYS_DIR}/{spec.api_keys.key}")
    cache = spec.cache
    if cache is not None:
        args += _optional(
            ("--redis-url", cache.redis_url),
            ("--cache-bytes", cache.bytes),
            ("--cache-ttl", cache.ttl_seconds),
        )
    if spec.editing.enabled:
        args.append("--enable-editing")
        args += _optional(("--kontext-model", spec.editing.kontext_model))
    return args + _optional(
        ("--vqa-model", spec.vqa.model if spec.vqa is not None else None),
        ("--max-image-pixels", spec.max_image_pixels),
    )


def performance_args(perf: PerformanceSpec | None) -> list[str]:
    """The server flags for ``perf``; none for a value left at the server's default, so a
    spec without ``performance`` renders as before."""
    if perf is None:
        return []
    args = _optional(
        ("--compile", perf.compile if perf.compile != "auto" else None),
        ("--warmup-sizes", ",".join(perf.warmup_sizes) if perf.warmup_sizes else None),
        ("--quantize", perf.quantize if perf.quantize != "none" else None),
        ("--step-cache", perf.step_cache if perf.step_cache != "off" else None),
        ("--attention-backend", perf.attention_backend),
        ("--offload", perf.offload if perf.offload != "none" else None),
    )
    if not perf.vae_slicing:
        args.append("--no-vae-slicing")
    if perf.vae_tiling:
        args.append("--vae-tiling")
    return args + _optional(
        ("--lora-max-rank", perf.lora_max_rank), ("--compile-cache", compile_cache_dir(perf))
    )


def server_env(spec: FluxDeploymentSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]
    if spec.model.source.pvc is not None or spec.model_cache is not None:
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


def pod_volumes(
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
        claim = {"claimName": pvc.claim_name, "readOnly": True}
        model = {"name": "model", "persistentVolumeClaim": claim}
        _mount(volumes, mounts, model, MODEL_DIR, pvc.sub_path)
    if spec.model_cache is not None:
        _mount(volumes, mounts, model_cache_volume(owner, spec), MODEL_CACHE_DIR)
    _compile_cache(spec, volumes, mounts)
    for i, lora in enumerate(spec.loras):
        path = _lora_path(spec, i)
        if lora.config_map is not None:
            _mount(
                volumes, mounts, {"name": f"lora-{i}", "configMap": {"name": lora.config_map}}, path
            )
        elif lora.pvc is not None:
            claim = {"claimName": lora.pvc.claim_name, "readOnly": True}
            volume = {"name": f"lora-{i}", "persistentVolumeClaim": claim}
            _mount(volumes, mounts, volume, path, lora.pvc.sub_path)
        # else: a path under the model volume needs no volume of its own
    safety = spec.safety
    if safety is not None and (safety.blocklist is not None or safety.blocklist_config_map_ref):
        if safety.blocklist_config_map_ref is not None:
            ref = safety.blocklist_config_map_ref
            source = {"name": ref.name, "items": [{"key": ref.key, "path": BLOCKLIST_FILE}]}
        else:
            source = {"name": blocklist_config_map_name(owner.name, blocklist_hash(spec) or "")}
        _mount(volumes, mounts, {"name": "safety", "configMap": source}, SAFETY_DIR)
    if spec.api_keys is not None:
        secret = {"secretName": spec.api_keys.secret_name, "defaultMode": 0o440}
        _mount(volumes, mounts, {"name": "api-keys", "secret": secret}, API_KEYS_DIR)
    return volumes, mounts


def _compile_cache(
    spec: FluxDeploymentSpec, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]
) -> None:
    """The compile cache's PVC, mounted read-write (the pods write the kernels they
    compile; the server keys them, so pods of other versions do not share them)."""
    cache = spec.performance.compile_cache if spec.performance is not None else None
    if cache is None or cache.claim_name is None:
        return
    volumes.append(
        {"name": "compile-cache", "persistentVolumeClaim": {"claimName": cache.claim_name}}
    )
    mount: dict[str, Any] = {"name": "compile-cache", "mountPath": COMPILE_CACHE_DIR}
    if cache.sub_path:
        mount["subPath"] = cache.sub_path
    mounts.append(mount)


def _mount(
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    volume: dict[str, Any],
    path: str,
    sub_path: str | None = None,
) -> None:
    """``volume``, mounted read-only at ``path`` (``sub_path`` of it, when given)."""
    volumes.append(volume)
    mount: dict[str, Any] = {"name": volume["name"], "mountPath": path, "readOnly": True}
    if sub_path:
        mount["subPath"] = sub_path
    mounts.append(mount)


def server_container(owner: Owner, spec: FluxDeploymentSpec, revision: Revision) -> dict[str, Any]:
    _, mounts = pod_volumes(owner, spec, revision)
    limits: dict[str, str] = {"memory": spec.resources.memory}
    if spec.gpu.count > 0:
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    return {
        "name": "server",
        "image": revision.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": server_args(spec, revision),
        "env": server_env(spec),
        # Only with credentialsSecret: a spec without it renders as before.
        **(
            {"envFrom": [{"secretRef": {"name": spec.credentials_secret}}]}
            if spec.credentials_secret
            else {}
        ),
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"} for name, port in SERVER_PORTS
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
            "failureThreshold": startup_failure_threshold(spec),
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
        "securityContext": restricted_container(),
    }

"""``spec.modelCache``: the weights at a pinned revision on a volume every pod mounts
read-only, instead of 35 GB from the hub on every start; ``spec.performance.compileCache``:
the compiled kernels kept across restarts; and the startupProbe sized from what a start
measured.

The PVC ``NAME-model-<hash>`` (the hash of the model id and revision: another revision is
another cache, filled beside the old one) asks for ``ReadWriteOnce`` and ``ReadOnlyMany``:
the Job ``NAME-model-<hash>`` writes it once through the first, every pod mounts it
read-only through the second, on any node (a StorageClass offering both: NFS, CephFS,
Filestore, EFS...). The Job runs the server's own image (``huggingface_hub`` is in it)
and writes ``.complete`` last; the pods wait for that file in an init container, so none
loads a half-written snapshot. With ``image`` the weights are an OCI image mounted as an
``image`` volume: no PVC, no Job, no wait.
"""

from __future__ import annotations

import math
from typing import Any

from flux_operator.render.naming import (
    CACHE_DIR,
    STARTUP_FAILURE_THRESHOLD,
    STARTUP_PERIOD_SECONDS,
    Owner,
    Revision,
    common_labels,
    content_hash,
    object_metadata,
)
from flux_operator.render.pod_basics import restricted_container
from flux_operator.spec import FluxDeploymentSpec, PerformanceSpec

MODEL_CACHE_DIR = "/model-cache"
COMPILE_CACHE_DIR = "/compile-cache"
COMPLETE_MARKER = ".complete"
STARTUP_MARGIN = 2
"""The startupProbe allows this many times the measured start (a slower node, a busier
volume) before the kubelet restarts the pod."""
MIN_STARTUP_FAILURES = 30  # 5 minutes at the 10 s period, whatever was measured

# Only the diffusers layout: the root's single-file checkpoints would double the download.
_DOWNLOAD = (
    "import pathlib, sys\n"
    "from huggingface_hub import snapshot_download\n"
    "repo, revision, out = sys.argv[1:4]\n"
    "snapshot_download(repo, revision=revision, local_dir=out,\n"
    "    allow_patterns=['*.json', '*.txt', '*.model', '*/*.safetensors'])\n"
    "pathlib.Path(out, '.complete').touch()\n"
)
_WAIT = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    print('waiting for the model cache job', flush=True)\n"
    "    time.sleep(10)\n"
)


def model_cache_name(owner: Owner, spec: FluxDeploymentSpec) -> str:
    cache = spec.model_cache
    assert cache is not None
    return f"{owner.name}-model-{content_hash([spec.model.id, cache.revision])}"


def model_path(spec: FluxDeploymentSpec) -> str:
    """Where the server loads the weights from with a model cache."""
    cache = spec.model_cache
    assert cache is not None
    return MODEL_CACHE_DIR if cache.image is not None else f"{MODEL_CACHE_DIR}/{cache.revision}"


def render_model_cache_pvc(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    cache = spec.model_cache
    assert cache is not None
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
        "resources": {"requests": {"storage": cache.size}},
    }
    if cache.storage_class_name is not None:
        pvc_spec["storageClassName"] = cache.storage_class_name
    name = model_cache_name(owner, spec)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_metadata(owner, name, common_labels(owner)),
        "spec": pvc_spec,
    }


def render_model_cache_job(
    owner: Owner, spec: FluxDeploymentSpec, revision: Revision
) -> dict[str, Any]:
    """The Job that fills the PVC once (created once: a Job's template is immutable)."""
    cache = spec.model_cache
    assert cache is not None
    name = model_cache_name(owner, spec)
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": "/tmp/huggingface"}]
    hub = spec.model.source.hub
    if hub is not None and hub.token_secret_ref is not None:
        ref = {"name": hub.token_secret_ref.name, "key": hub.token_secret_ref.key}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    out = f"{MODEL_CACHE_DIR}/{cache.revision}"
    container = {
        "name": "download",
        "image": revision.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python", "-c", _DOWNLOAD, spec.model.id, cache.revision, out],
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": restricted_container(),
    }
    pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [container],
        "volumes": [
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": name}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    labels = common_labels(owner)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(owner, name, labels),
        "spec": {
            "backoffLimit": 6,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def model_cache_volume(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    cache = spec.model_cache
    assert cache is not None
    if cache.image is not None:
        return {
            "name": "model-cache",
            "image": {"reference": cache.image, "pullPolicy": "IfNotPresent"},
        }
    claim = {"claimName": model_cache_name(owner, spec), "readOnly": True}
    return {"name": "model-cache", "persistentVolumeClaim": claim}


def wait_for_cache(spec: FluxDeploymentSpec, image: str) -> dict[str, Any] | None:
    """The init container that holds a pod until the Job has filled the PVC (None with
    an image volume: the image is whole or not pulled)."""
    cache = spec.model_cache
    if cache is None or cache.image is not None:
        return None
    marker = f"{model_path(spec)}/{COMPLETE_MARKER}"
    return {
        "name": "wait-for-model-cache",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python", "-c", _WAIT, marker],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_CACHE_DIR, "readOnly": True}],
        "securityContext": restricted_container(),
    }


def compile_cache_dir(perf: PerformanceSpec) -> str | None:
    """``--compile-cache``: the shared PVC's mount, else a directory of the pod's cache
    volume (kept across container restarts, not pod restarts)."""
    cache = perf.compile_cache
    if cache is None:
        return None
    return COMPILE_CACHE_DIR if cache.claim_name is not None else f"{CACHE_DIR}/compile"


def startup_failure_threshold(spec: FluxDeploymentSpec) -> int:
    """The startupProbe's failureThreshold (period ``STARTUP_PERIOD_SECONDS``).

    From the measured phases (``performance.startupSeconds``, what
    ``fluxserve_startup_seconds{phase}`` said): ``ceil(STARTUP_MARGIN x (download + load
    + compile + warmup) / period)``, the download left out when the weights are local
    (a PVC or the model cache), at least ``MIN_STARTUP_FAILURES``. FLUX.1-dev from a node
    cache with the compile cache warm, say load 40 s + compile 20 s + warm-up 15 s: 2 x 75
    / 10 = 15, so 30 (5 min) instead of 180 (30 min): a pod that hangs is restarted in
    minutes. Unmeasured: ``STARTUP_FAILURE_THRESHOLD`` (30 min, a 24 GB download)."""
    perf = spec.performance
    measured = perf.startup_seconds if perf is not None else None
    if measured is None:
        return STARTUP_FAILURE_THRESHOLD
    local = spec.model.source.pvc is not None or spec.model_cache is not None
    total = measured.load + measured.compile + measured.warmup + (0 if local else measured.download)
    return max(MIN_STARTUP_FAILURES, math.ceil(STARTUP_MARGIN * total / STARTUP_PERIOD_SECONDS))

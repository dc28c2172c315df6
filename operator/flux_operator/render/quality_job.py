"""The canary's quality gate as a batch/v1 Job (``spec.rollout.canary.analysis.quality``).

The Job runs ``python -m flux_client quality`` (the command line
``flux_operator.spec.quality.gate_arguments`` derives from the spec, as Kargo's
verification does) in the candidate's server image, which ships ``flux_client``. It asks
the track Services ``NAME-stable`` and ``NAME-canary`` over REST, reads the golden set
from its ConfigMap mounted at ``/golden``, and sees the model volume where the server
does (``/models``), so ``clipModel`` and ``similarityModel`` may be paths there. Its
one-line JSON verdict is the container's termination message; the exit status (0 pass,
1 fail, 2 cannot judge) is the Job's success or failure. Pure.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flux_operator.render.canary import track_service_name
from flux_operator.render.naming import (
    CACHE_DIR,
    HTTP_PORT,
    MODEL_DIR,
    Owner,
    Revision,
    common_labels,
    object_metadata,
    selector_labels,
)
from flux_operator.render.pod import server_env
from flux_operator.render.pod_basics import restricted_container
from flux_operator.spec import FluxDeploymentSpec, parse_duration
from flux_operator.spec.quality import QualityGate, gate_arguments

CONTAINER = "quality-gate"
API_KEY_ENV = "FLUXSERVE_API_KEY"
"""Where ``python -m flux_client`` reads its API key."""
GOLDEN_DIR = "/golden"
TERMINATION_LOG = "/dev/termination-log"
COMPONENT = "quality-gate"
REVISION_LABEL = "fluxserve.dev/revision"
# A finished gate is evidence for a day (its termination message and log), then goes.
TTL_SECONDS = 86400


def quality_job_labels(owner: Owner, release: str, revision: int) -> dict[str, str]:
    """The common labels less the server's selector (``app.kubernetes.io/name`` and
    ``instance``): a gate pod must never be an endpoint of the server's Services, nor a
    pod its Deployments or its HPA count."""
    labels = {
        k: v for k, v in common_labels(owner, release).items() if k not in selector_labels(owner)
    }
    return {**labels, "app.kubernetes.io/component": COMPONENT, REVISION_LABEL: str(revision)}


def quality_job_name(owner_name: str, revision: int, attempt: int) -> str:
    """``NAME-quality-REVISION-ATTEMPT``, at most 63 characters (the ``job-name`` label the
    Job controller puts on its pods is limited so); a long name keeps a hash of itself."""
    suffix = f"-quality-{revision}-{attempt}"
    if len(owner_name) + len(suffix) <= 63:
        return owner_name + suffix
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    return f"{owner_name[: 63 - len(suffix) - 9].rstrip('-.')}-{digest}{suffix}"


def service_url(owner: Owner, track: str) -> str:
    namespace = owner.namespace or "default"
    return f"http://{track_service_name(owner.name, track)}.{namespace}.svc:{HTTP_PORT}"  # type: ignore[arg-type]


def quality_command(owner: Owner, gate: QualityGate) -> list[str]:
    """The container's command: :func:`gate_arguments` against the two track Services,
    plus where to leave the verdict for the operator."""
    args = gate_arguments(
        gate, stable_url=service_url(owner, "stable"), candidate_url=service_url(owner, "canary")
    )
    return [*args, "--termination-log", TERMINATION_LOG]


def _volumes(
    spec: FluxDeploymentSpec, gate: QualityGate
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "golden", "configMap": {"name": gate.golden_config_map}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "golden", "mountPath": GOLDEN_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    pvc = spec.model.source.pvc
    if pvc is not None:
        claim = {"claimName": pvc.claim_name, "readOnly": True}
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
        mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        mounts.append(mount)
    return volumes, mounts


def api_key_env(gate: QualityGate) -> list[dict[str, Any]]:
    """The gate's API key (``FLUXSERVE_API_KEY``) from its Secret, where the servers
    require keys."""
    ref = gate.api_key_secret_ref
    if ref is None:
        return []
    return [
        {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    ]


def render_quality_job(
    owner: Owner,
    spec: FluxDeploymentSpec,
    candidate: Revision,
    gate: QualityGate,
    *,
    revision: int,
    attempt: int,
) -> dict[str, Any]:
    """The Job of one gate run for the canary of ``candidate`` (history ``revision``);
    ``attempt`` counts the canary's failed measurements, so each retry is a new Job."""
    volumes, mounts = _volumes(spec, gate)
    env = [e for e in server_env(spec) if e["name"] in ("HOME", "HF_HOME", "HF_HUB_OFFLINE")]
    env += api_key_env(gate)
    labels = quality_job_labels(owner, candidate.release, revision)
    container = {
        "name": CONTAINER,
        "image": gate.image or candidate.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": quality_command(owner, gate),
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container(),
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(owner, quality_job_name(owner.name, revision, attempt), labels),
        "spec": {
            # One run: a failure is a measurement; the canary's failureLimit retries it.
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(parse_duration(gate.timeout)),
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }

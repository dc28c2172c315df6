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
)
from flux_operator.render.pod import server_env
from flux_operator.spec import FluxDeploymentSpec, parse_duration
from flux_operator.spec.quality import QualityGate, gate_arguments

CONTAINER = "quality-gate"
GOLDEN_DIR = "/golden"
TERMINATION_LOG = "/dev/termination-log"
COMPONENT = "quality-gate"
REVISION_LABEL = "fluxserve.dev/revision"
# A finished gate is evidence for a day (its termination message and log), then goes.
TTL_SECONDS = 86400
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


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
    labels = {
        **common_labels(owner, candidate.release),
        "app.kubernetes.io/component": COMPONENT,
        REVISION_LABEL: str(revision),
    }
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
        "securityContext": dict(RESTRICTED_CONTAINER),
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

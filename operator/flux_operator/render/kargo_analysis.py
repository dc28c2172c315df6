"""The Argo Rollouts ``AnalysisTemplate`` Kargo verifies a stage with: one Job running the
quality gate (``python -m flux_client quality``).

Its command line is :func:`flux_operator.spec.quality.gate_arguments` — the one the
operator's canary analysis runs — so a threshold written in
``spec.rollout.canary.analysis.quality`` means the same in staging's verification and in
production's canary. The endpoints and the release are the template's arguments
(:data:`QUALITY_ARGS`), which Kargo fills in per freight; Argo Rollouts substitutes
``{{args.NAME}}`` anywhere in the metric, the Job's image included.

The Job runs in the Kargo Project's namespace (where Kargo creates AnalysisRuns), so the
golden ConfigMap must be there too; it is mounted at ``/golden``.
"""

from __future__ import annotations

from typing import Any

from flux_operator.render.pod_basics import restricted_container
from flux_operator.render.quality_job import api_key_env
from flux_operator.spec.base import parse_duration
from flux_operator.spec.quality import QualityGate, gate_arguments

ROLLOUTS_API_VERSION = "argoproj.io/v1alpha1"
QUALITY_ARGS = ("release", "stable-url", "candidate-url")
"""The template's arguments: the release (image tag) under test, then the URLs."""
GOLDEN_DIR = "/golden"
SCRATCH_DIR = "/tmp"


def _arg(name: str) -> str:
    return "{{args." + name + "}}"


def gate_container(gate: QualityGate, image: str) -> dict[str, Any]:
    """The gate's container: the release's server image (it ships flux_client) unless the
    gate names another, with the golden set read-only and a scratch directory for the
    scorers' model cache (the root filesystem is read-only)."""
    command = gate_arguments(
        gate, stable_url=_arg("stable-url"), candidate_url=_arg("candidate-url")
    )
    return {
        "name": "quality",
        "image": gate.image or f"{image}:{_arg('release')}",
        "command": command,
        "env": [
            {"name": "HOME", "value": SCRATCH_DIR},
            {"name": "HF_HOME", "value": f"{SCRATCH_DIR}/huggingface"},
            *api_key_env(gate),
        ],
        "resources": {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        },
        "volumeMounts": [
            {"name": "golden", "mountPath": GOLDEN_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ],
        "securityContext": restricted_container(),
    }


def render_analysis_template(
    *, name: str, meta: dict[str, Any], gate: QualityGate, image: str
) -> dict[str, Any]:
    """One metric, one Job: the gate's exit status is the verdict (0 pass, 1 fail), and a
    failed run fails the verification (no retries: the gate already averages the golden
    set)."""
    seconds = int(parse_duration(gate.timeout))
    pod = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [gate_container(gate, image)],
        "volumes": [
            {"name": "golden", "configMap": {"name": gate.golden_config_map}},
            {"name": "scratch", "emptyDir": {}},
        ],
    }
    job = {
        "metadata": {"labels": {"app.kubernetes.io/component": "quality-gate"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": seconds,
            "template": {"spec": pod},
        },
    }
    return {
        "apiVersion": ROLLOUTS_API_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": {**meta, "name": name},
        "spec": {
            "args": [{"name": arg} for arg in QUALITY_ARGS],
            "metrics": [
                {"name": "quality", "count": 1, "failureLimit": 0, "provider": {"job": job}}
            ],
        },
    }

"""The quality gate's Job (rendered) and its measurement (judged from the Job), pure."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import kubernetes_validate
import pytest
from conftest import base_spec

from flux_operator.reconcile.canary_decision import decide, start
from flux_operator.reconcile.quality import gate_measurement
from flux_operator.render import Owner, desired_revision, selector_labels
from flux_operator.render.quality_job import quality_job_name, render_quality_job
from flux_operator.spec import FluxDeploymentSpec
from flux_operator.spec.quality import QualityGate

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=timezone.utc)
OWNER = Owner("flux", "ml", "uid-1")
GATE = QualityGate.model_validate(
    {
        "goldenConfigMap": "house-golden",
        "timeout": "20m",
        "apiKeySecretRef": {"name": "gate-key", "key": "key"},
    }
)


def _job() -> dict[str, Any]:
    spec = FluxDeploymentSpec.model_validate(base_spec(release="v3"))
    return render_quality_job(
        OWNER, spec, desired_revision(OWNER, spec), GATE, revision=2, attempt=1
    )


def _ended(kind: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": kind, "status": "True"}]}}


def _pod(message: str) -> dict[str, Any]:
    terminated = {"exitCode": 1, "message": message}
    return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


def test_the_job_is_a_valid_batch_v1_job_of_one_try() -> None:
    job = _job()
    kubernetes_validate.validate(job, "1.31", strict=True)
    assert job["metadata"]["name"] == "flux-quality-2-1"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 1200
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["python", "-m", "flux_client", "quality"]
    assert "http://flux-canary.ml.svc:8080" in container["command"]
    assert container["command"][-2:] == ["--termination-log", "/dev/termination-log"]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v3"
    # Not one of the server's pods: no Service, Deployment or HPA selector matches it.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not set(selector_labels(OWNER).items()) <= set(labels.items())
    assert labels["app.kubernetes.io/component"] == "quality-gate"
    env = {e["name"]: e for e in container["env"]}
    assert env["FLUXSERVE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "gate-key",
        "key": "key",
    }


def test_long_names_stay_within_the_job_name_label() -> None:
    name = quality_job_name("f" * 70, 123, 4)
    assert len(name) <= 63 and name.endswith("-quality-123-4")
    assert name != quality_job_name("f" * 69 + "g", 123, 4)


def test_the_measurement_follows_the_job() -> None:
    running = gate_measurement({"status": {}}, [], "j", NOW)
    assert running.outcome == "Inconclusive" and "running" in (running.reason or "")
    assert gate_measurement(_ended("Complete"), [], "j", NOW).outcome == "Passed"
    failed = {
        "verdict": "fail",
        "message": "quality fail: clip-score-drop=3.5 (max 2)",
        "failed": [{"name": "clip-score-drop", "value": 3.5, "min": None, "max": 2.0}],
    }
    m = gate_measurement(_ended("Failed"), [_pod(json.dumps(failed))], "j", NOW)
    assert (m.metric, m.value, m.max, m.outcome) == ("quality:clip-score-drop", 3.5, 2.0, "Failed")
    error = {"verdict": "error", "message": "quality error: golden.yaml: prompts: ..."}
    m = gate_measurement(_ended("Failed"), [_pod(json.dumps(error))], "j", NOW)
    assert m.outcome == "Inconclusive" and "golden.yaml" in (m.reason or "")
    # Killed at its deadline: no verdict, the Job's own reason.
    deadline = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                           "reason": "DeadlineExceeded"}]}}  # fmt: skip
    m = gate_measurement(deadline, [], "j", NOW)
    assert m.outcome == "Failed" and "DeadlineExceeded" in (m.reason or "")


@pytest.mark.parametrize("limit", [0, 1])
def test_a_failed_gate_counts_against_the_failure_limit(limit: int) -> None:
    from flux_operator.spec import CanarySpec

    canary = CanarySpec.model_validate(
        {
            "steps": [{"weight": 25, "pause": "1m"}],
            "analysis": {"prometheusUrl": "http://p:9090", "failureLimit": limit},
        }
    )
    status = start(canary, "v3", 2, NOW)
    failed = {"verdict": "fail", "failed": [{"name": "similarity", "value": 0.2, "min": 0.5}]}
    m = gate_measurement(_ended("Failed"), [_pod(json.dumps(failed))], "j", NOW)
    decision = decide(canary, status, [m], NOW)
    aborted = type(decision).__name__ == "Abort"
    assert aborted == (limit == 0)
    assert decision.status.failures == 1

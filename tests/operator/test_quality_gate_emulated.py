"""The canary's quality gate: the real operator (kopf) against the Kubernetes API emulator.

The canary's analysis has ``quality`` beside the Prometheus queries (a stub that passes
every query). The operator runs the gate as a Job; the test plays the Job controller and
the kubelet: it ends the Job and leaves the gate's verdict as the pod's termination
message, which is what ``python -m flux_client quality --termination-log`` writes (that
command against real servers is tested in ``tests/client/test_quality_gate.py``). A
failing gate aborts the canary and rolls back like a failing metric; a passing one lets
the promotion go on.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import NAMESPACE, Cluster, OperatorHandle, condition
from test_operator_canary import (  # noqa: F401  (prometheus: the stub's fixture)
    IMAGE,
    StubPrometheus,
    canary_spec,
    image,
    prometheus,
    ready_on,
    running,
    serve,
)

from flux_operator.spec.quality import QualityGate, gate_arguments

QUALITY = {"goldenConfigMap": "house-golden", "clipModel": "/models/clip-vit-base-patch32"}
JOB = "flux-quality-2-0"
"""The gate of revision 2 (v3, the canary), attempt 0 (no failure yet)."""


async def _post(cluster: Cluster, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    async with cluster.session.post(cluster.path(kind), json=body) as resp:
        resp.raise_for_status()
        return dict(await resp.json())


async def gate_ends(cluster: Cluster, job: str, exit_code: int, verdict: dict[str, Any]) -> None:
    """Playing the kubelet (the pod ended, its termination message the gate's verdict) and
    the Job controller (the Job Complete, or Failed)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-x7k2q", "namespace": NAMESPACE, "labels": {"job-name": job}},
        "spec": {"containers": [{"name": "quality-gate", "image": "x"}]},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "quality-gate",
                    "state": {
                        "terminated": {"exitCode": exit_code, "message": json.dumps(verdict)}
                    },
                }
            ],
        },
    }
    await _post(cluster, "Pod", pod)
    ended = "Complete" if exit_code == 0 else "Failed"
    status: dict[str, Any] = {"conditions": [{"type": ended, "status": "True"}]}
    status["succeeded" if exit_code == 0 else "failed"] = 1
    await cluster.patch("Job", job, {"status": status})


async def canary_of_v3_with_a_gate(cluster: Cluster, stub: StubPrometheus) -> dict[str, Any]:
    spec = canary_spec(
        [{"weight": 25, "pause": "1s"}],
        analysis={"prometheusUrl": stub.url, "quality": QUALITY},
        release="v2",
    )
    await ready_on(cluster, "flux", spec)
    await cluster.update_spec("flux", release="v3")
    await running(cluster, "flux-canary", "v3")
    await serve(cluster, "flux-canary")
    job = await cluster.wait_for(lambda: cluster.get("Job", JOB), "the quality gate Job")
    # Until the gate answers, the step holds (inconclusive), however long its pause.
    status = await cluster.wait_status(
        "flux",
        lambda s: any(
            m["metric"] == "quality" for m in s.get("canary", {}).get("measurements", [])
        ),
        "a round with the gate running",
    )
    gate = next(m for m in status["canary"]["measurements"] if m["metric"] == "quality")
    assert gate["outcome"] == "Inconclusive" and JOB in gate["reason"]
    assert status["canary"]["phase"] == "Progressing" and status["canary"]["step"] == 0
    return job


def assert_job_runs_the_gate(job: dict[str, Any]) -> None:
    """The Job runs the command the spec derives, on the candidate's image, with the golden
    set and the model volume mounted."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    expected = gate_arguments(
        QualityGate.model_validate(QUALITY),
        stable_url=f"http://flux-stable.{NAMESPACE}.svc:8080",
        candidate_url=f"http://flux-canary.{NAMESPACE}.svc:8080",
    )
    assert container["command"] == [*expected, "--termination-log", "/dev/termination-log"]
    assert container["image"] == f"{IMAGE}:v3"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["golden"]["mountPath"] == "/golden"
    assert mounts["model"]["mountPath"] == "/models"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["golden"]["configMap"]["name"] == "house-golden"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["metadata"]["ownerReferences"][0]["name"] == "flux"


async def test_a_failing_gate_aborts_the_canary_and_rolls_back(
    cluster: Cluster,
    operator: OperatorHandle,
    prometheus: StubPrometheus,  # noqa: F811  (the fixture imported above)
) -> None:
    job = await canary_of_v3_with_a_gate(cluster, prometheus)
    assert_job_runs_the_gate(job)
    verdict = {
        "verdict": "fail",
        "message": "quality fail: similarity=0.41 (min 0.5)",
        "failed": [{"name": "similarity", "value": 0.41, "min": 0.5, "max": None}],
    }
    await gate_ends(cluster, JOB, 1, verdict)
    status = await cluster.wait_status(
        "flux", lambda s: (s.get("canary") or {}).get("phase") == "Aborted", "the abort"
    )
    rolled_back = condition(status, "RolledBack")
    assert rolled_back["status"] == "True" and rolled_back["reason"] == "CanaryAborted"
    assert "quality:similarity = 0.41, bound min 0.5" in rolled_back["message"]
    outcomes = [(e["release"], e["outcome"]) for e in status["history"]]
    assert outcomes == [("v2", "Available"), ("v3", "Failed")]
    assert status["currentRelease"] == "v2" and status["phase"] == "RolledBack"
    await cluster.wait_event("CanaryAborted", "quality:similarity")

    async def canary_gone() -> bool:
        return await cluster.get("Deployment", "flux-canary") is None

    await cluster.wait_for(canary_gone, "the canary Deployment removed")
    assert image(await cluster.get("Deployment", "flux")) == f"{IMAGE}:v2"
    assert operator.crashed() is None


async def test_a_passing_gate_lets_the_promotion_go_on(
    cluster: Cluster,
    operator: OperatorHandle,
    prometheus: StubPrometheus,  # noqa: F811  (the fixture imported above)
) -> None:
    await canary_of_v3_with_a_gate(cluster, prometheus)
    verdict = {"verdict": "pass", "message": "quality pass: similarity=0.98 (min 0.5)"}
    await gate_ends(cluster, JOB, 0, {**verdict, "failed": []})
    # The step's pause is over and the round passed (the queries and the gate): promoted.
    await running(cluster, "flux", "v3")
    await serve(cluster, "flux")
    status = await cluster.wait_status(
        "flux", lambda s: (s.get("canary") or {}).get("phase") == "Promoted", "the promotion"
    )
    assert status["currentRelease"] == "v3"
    assert condition(status, "RolledBack")["status"] == "False"
    # One gate run for the canary: its verdict stood for every later round.
    jobs = [j["metadata"]["name"] for j in await cluster.list("Job")]
    assert jobs == [JOB]
    assert operator.crashed() is None

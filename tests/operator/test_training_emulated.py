"""FluxLoRATraining with the real operator (kopf) against the Kubernetes API emulator.

The test plays the Job controller and the kubelet (conftest says which parts of the API
server it plays besides): it marks the Job complete and gives its Pod the terminated
state whose message is the trainer's result, as the kubelet copies
/dev/termination-log there; while the Pod runs, it serves the Pod's log."""

from __future__ import annotations

import json
from typing import Any

import kmock
from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec, condition

SHA = "ab" * 32


def training(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": "black-forest-labs/FLUX.1-dev",
        "release": "v1.5.0",
        "image": "ghcr.io/acme/fluxserve-server",
        "dataset": {"git": {"url": "https://github.com/acme/posters.git", "revision": "v3"}},
        "hyperparameters": {"steps": 400, "rank": 8, "resolution": 128, "seed": 3},
        "gpu": {"count": 1, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"}},
        "evaluation": {"minImprovementPercent": 5},
        "output": {"s3": "s3://acme-adapters/loras"},
        "promotion": "canary",
        "target": "flux-dev",
    }
    spec.update(changes)
    return spec


def result(base: float, final: float) -> str:
    uri = f"s3://acme-adapters/loras/{NAMESPACE}/poster-style/pytorch_lora_weights.safetensors"
    return json.dumps(
        {
            "status": "succeeded",
            "adapter": "/output/pytorch_lora_weights.safetensors",
            "adapter_uri": uri,
            "sha256": SHA,
            "dataset_sha256": "cd" * 32,
            "trainer_version": "0.1.0",
            "metrics": {
                "base_validation_loss": base,
                "final_validation_loss": final,
                "steps": 400,
                "seconds": 812.5,
                "peak_memory_gb": 21.4,
            },
        }
    )


async def _post(cluster: Cluster, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    async with cluster.session.post(cluster.path(kind), json=body) as resp:
        resp.raise_for_status()
        return await resp.json()


async def create_training(cluster: Cluster, spec: dict[str, Any]) -> dict[str, Any]:
    return await _post(
        cluster,
        "FluxLoRATraining",
        {
            "apiVersion": "fluxserve.dev/v1alpha1",
            "kind": "FluxLoRATraining",
            "metadata": {"name": "poster-style", "namespace": NAMESPACE},
            "spec": spec,
        },
    )


async def _start(cluster: Cluster, spec: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    await cluster.create_fd("flux-dev", base_spec())
    created = await create_training(cluster, spec)
    job = await cluster.wait_for(lambda: cluster.get("Job", "poster-style-train"), "the Job")
    return created, job


async def trainer_pod(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    """Playing the Job controller and the kubelet: the Job's Pod ``name`` in ``status``."""
    await _post(
        cluster,
        "Pod",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"job-name": "poster-style-train"},
            },
            "spec": {"containers": [{"name": "trainer", "image": "x"}]},
            "status": status,
        },
    )


async def job_finishes(cluster: Cluster, message: str) -> None:
    # Playing the kubelet: the pod ended, its termination message is the trainer's result.
    terminated = {"terminated": {"exitCode": 0, "message": message}}
    await trainer_pod(
        cluster,
        "poster-style-train-x7k2q",
        {"phase": "Succeeded", "containerStatuses": [{"name": "trainer", "state": terminated}]},
    )
    # Playing the Job controller: the Job completed.
    await cluster.patch(
        "Job",
        "poster-style-train",
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )


async def training_status(cluster: Cluster, phase: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await cluster.get("FluxLoRATraining", "poster-style")
        status = (body or {}).get("status") or {}
        return status if status.get("phase") == phase else None

    return await cluster.wait_for(check, f"FluxLoRATraining phase {phase}")


async def test_training_becomes_a_job_then_a_promoted_adapter(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    created, job = await _start(cluster, training())
    assert job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v1.5.0"
    assert container["command"] == ["python", "-m", "flux_trainer"]
    assert container["args"][:4] == [
        "train",
        "--base=black-forest-labs/FLUX.1-dev",
        "--dataset=git+https://github.com/acme/posters.git@v3",
        "--output=/output",
    ]
    assert {"--steps=400", "--rank=8", "--resolution=128", "--seed=3"} <= set(container["args"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    running = await training_status(cluster, "Running")
    assert running["progress"] == {"step": 0, "total": 400, "summary": "0/400"}

    await job_finishes(cluster, result(base=0.40, final=0.30))
    status = await training_status(cluster, "Succeeded")
    assert status["adapter"]["sha256"] == SHA
    assert status["adapter"]["uri"].startswith("s3://acme-adapters/loras/studio/poster-style/")
    assert status["metrics"]["improvementPercent"] == 25.0
    assert status["progress"]["summary"] == "400/400"
    assert condition(status, "Evaluated")["status"] == "True"
    assert condition(status, "Promoted")["status"] == "True"

    deployment = await cluster.get("FluxDeployment", "flux-dev")
    assert deployment is not None
    assert deployment["spec"]["loras"] == [
        {"name": "poster-style", "sha256": SHA, "uri": status["adapter"]["uri"]}
    ]
    assert operator.crashed() is None


async def test_failed_evaluation_never_touches_the_flux_deployment(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _start(cluster, training())
    before = await cluster.get("FluxDeployment", "flux-dev")
    await job_finishes(cluster, result(base=0.40, final=0.39))  # 2.5% < 5%
    status = await training_status(cluster, "Failed")
    evaluated = condition(status, "Evaluated")
    assert evaluated["status"] == "False" and evaluated["reason"] == "BelowThreshold"
    assert "2.50% better; at least 5% needed" in status["message"]
    assert status["adapter"]["sha256"] == SHA  # made, just not promoted
    after = await cluster.get("FluxDeployment", "flux-dev")
    assert after is not None and before is not None
    assert after["spec"] == before["spec"] == base_spec()
    assert "loras" not in after["spec"]
    assert not condition(status, "Promoted")


def step_line(step: int, eta_s: float) -> str:
    """A line as flux_trainer.report.Progress writes it."""
    record = {"time": "2026-01-01T00:00:00.000+00:00", "level": "info", "logger": "flux_trainer"}
    record |= {"message": "step", "event": "step", "step": step, "steps": 400, "loss": 0.31}
    return json.dumps(record | {"lr": 1e-4, "s_per_step": 1.5, "eta_s": eta_s})


async def pod_running(cluster: Cluster, log: list[str]) -> None:
    """Playing the kubelet: the trainer's Pod runs, and its log says ``log``."""
    await trainer_pod(cluster, "poster-style-train-r2d2x", {"phase": "Running"})
    pods_log = cluster.server["get", kmock.resource("v1/pods"), kmock.subresource("log")]
    pods_log << "\n".join(log).encode() + b"\n"


async def test_progress_is_read_from_the_running_trainer_s_log(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _start(cluster, training())
    await training_status(cluster, "Running")
    log = [step_line(119, 182.0), step_line(120, 420.4), '{"event": "validation", "loss": 0.3}']
    await pod_running(cluster, log)

    async def moved() -> dict[str, Any] | None:
        status = await training_status(cluster, "Running")
        return status["progress"] if status["progress"]["step"] else None

    progress = await cluster.wait_for(moved, "progress from the log")
    assert progress == {
        "step": 120,
        "total": 400,
        "etaSeconds": 420,
        "summary": "120/400 (ETA 7m00s)",
    }
    # The tail is asked for, not the whole log.
    asked = [r for r in cluster.server if r.subresource == "log"]
    assert asked and asked[-1].params["tailLines"] == "50"
    assert asked[-1].params["container"] == "trainer"

    await job_finishes(cluster, result(base=0.40, final=0.30))
    status = await training_status(cluster, "Succeeded")
    assert status["progress"] == {"step": 400, "total": 400, "summary": "400/400"}
    assert operator.crashed() is None

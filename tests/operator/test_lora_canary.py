"""An adapter promoted by a FluxLoRATraining ships through the target's canary, and the
canary's rollback takes it away again: the real operator (kopf) against the Kubernetes
API emulator, with the Prometheus stub of test_operator_canary answering the analysis.

The adapters are part of a revision (like the image and the presets), so adding one is a
new revision: with strategy Canary it runs on ``NAME-canary`` first, and a rollback
renders the stable revision with the adapters it had."""

from __future__ import annotations

from typing import Any

import test_operator_canary
from conftest import Cluster, OperatorHandle, base_spec, condition
from test_operator_canary import StubPrometheus, canary_spec, must, ready_on, serve
from test_training_emulated import (
    SHA,
    create_training,
    job_finishes,
    result,
    training,
    training_status,
)

stub_prometheus = test_operator_canary.prometheus  # its fixture, under this name here


def args(deployment: dict[str, Any] | None) -> list[str]:
    assert deployment is not None
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def lora_flags(deployment: dict[str, Any] | None) -> list[str]:
    return [a for a in args(deployment) if a.startswith("--lora")]


async def test_a_promoted_adapter_goes_out_by_canary_and_its_rollback_removes_it(
    cluster: Cluster, operator: OperatorHandle, stub_prometheus: StubPrometheus
) -> None:
    prometheus = stub_prometheus
    spec = canary_spec([{"weight": 25, "pause": "1h"}], analysis={"prometheusUrl": prometheus.url})
    await ready_on(cluster, "flux-dev", spec)
    assert lora_flags(await must(cluster, "Deployment", "flux-dev")) == []
    prometheus.values["error-ratio"] = 0.5  # the adapter's images fail

    await create_training(cluster, training())
    await cluster.wait_for(lambda: cluster.get("Job", "poster-style-train"), "the Job")
    await job_finishes(cluster, result(base=0.40, final=0.30))
    trained = await training_status(cluster, "Succeeded")
    uri = trained["adapter"]["uri"]

    # The promotion is a new revision of the same release: a canary carries the adapter,
    # the stable pods do not.
    canary = await cluster.wait_for(
        lambda: cluster.get("Deployment", "flux-dev-canary"), "a canary of the adapter"
    )
    assert lora_flags(canary) == [
        f"--lora=poster-style={uri}:1",
        f"--lora-sha256=poster-style={SHA}",
    ]
    assert lora_flags(await must(cluster, "Deployment", "flux-dev")) == []
    await serve(cluster, "flux-dev-canary")

    # The analysis fails: rolled back, the canary gone, the stable pods still without it.
    status = await cluster.wait_status(
        "flux-dev", lambda s: (s.get("canary") or {}).get("phase") == "Aborted", "the abort"
    )
    assert "error-ratio = 0.5, bound max 0.05" in condition(status, "RolledBack")["message"]
    history = status["history"]
    assert [e["outcome"] for e in history] == ["Available", "Failed"]
    assert "loras" not in history[0] and "poster-style" in history[1]["loras"]

    async def canary_gone() -> bool:
        return await cluster.get("Deployment", "flux-dev-canary") is None

    await cluster.wait_for(canary_gone, "the canary Deployment removed")
    assert lora_flags(await must(cluster, "Deployment", "flux-dev")) == []
    assert operator.crashed() is None


def test_an_s3_adapter_s_pods_read_the_store_with_the_credentials_secret() -> None:
    from flux_operator.render import desired_revision, render_deployment
    from flux_operator.render.naming import Owner
    from flux_operator.spec import FluxDeploymentSpec

    lora = {"name": "poster-style", "uri": "s3://acme/a.safetensors", "sha256": SHA}
    spec = FluxDeploymentSpec.model_validate(
        base_spec(loras=[lora], credentialsSecret="adapter-store")
    )
    owner = Owner("flux-dev", "studio")
    deployment = render_deployment(owner, spec, desired_revision(owner, spec))
    assert lora_flags(deployment) == [
        "--lora=poster-style=s3://acme/a.safetensors:1",
        f"--lora-sha256=poster-style={SHA}",
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "adapter-store"}}]
    plain = FluxDeploymentSpec.model_validate(base_spec())
    rendered = render_deployment(owner, plain, desired_revision(owner, plain))
    assert "envFrom" not in rendered["spec"]["template"]["spec"]["containers"][0]

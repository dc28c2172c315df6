"""The real operator (kopf) against the Kubernetes API emulator over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock
import pytest
from conftest import NAMESPACE, Cluster, OperatorHandle, base_spec, condition

from flux_operator.cli import main as cli_main


async def test_create_makes_children_and_reports_progress(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    created = await cluster.create_fd("flux-dev", base_spec())
    uid = created["metadata"]["uid"]

    deployment = await cluster.wait_for(
        lambda: cluster.get("Deployment", "flux-dev"), "the Deployment"
    )
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/fluxserve-server:v1.4.1"
    assert await cluster.wait_for(lambda: cluster.get("Service", "flux-dev"), "the Service")
    hpa = await cluster.wait_for(
        lambda: cluster.get("HorizontalPodAutoscaler", "flux-dev"), "the HPA"
    )
    assert hpa["spec"]["maxReplicas"] == 4
    maps = [c for c in await cluster.list("ConfigMap") if "-presets-" in c["metadata"]["name"]]
    assert len(maps) == 1 and maps[0]["immutable"] is True

    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("history"), "a first revision in history"
    )
    assert status["history"][0]["outcome"] == "Progressing"
    assert (
        status["selector"]
        == "app.kubernetes.io/name=fluxserve-server,app.kubernetes.io/instance=flux-dev"
    )

    await cluster.deployment_available("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready"
    )
    assert status["currentRelease"] == "v1.4.1"
    assert status["history"][0]["outcome"] == "Available"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 1
    await cluster.wait_event("RevisionAvailable", "v1.4.1")
    assert operator.crashed() is None
    # Nothing but the status was written to the resource: no finalizers, no bookkeeping
    # annotations, no spec change (ArgoCD would see drift).
    body = await cluster.get("FluxDeployment", "flux-dev")
    assert not body["metadata"].get("finalizers")
    assert not body["metadata"].get("annotations")
    assert body["spec"] == base_spec()
    assert deployment["metadata"]["namespace"] == NAMESPACE


async def _ready(cluster: Cluster, name: str, spec: dict | None = None) -> dict:
    await cluster.create_fd(name, spec or base_spec())
    await cluster.wait_for(lambda: cluster.get("Deployment", name), "the Deployment")
    await cluster.deployment_available(name)
    return await cluster.wait_status(name, lambda s: s.get("phase") == "Ready", "phase Ready")


def _image(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


async def _deployment_image_is(cluster: Cluster, name: str, image: str) -> dict:
    async def check() -> dict | None:
        deployment = await cluster.get("Deployment", name)
        return deployment if deployment and _image(deployment) == image else None

    return await cluster.wait_for(check, f"Deployment image {image}")


async def test_new_release_is_a_new_revision(cluster: Cluster, operator: OperatorHandle) -> None:
    await _ready(cluster, "flux-dev")
    await cluster.update_spec("flux-dev", release="v1.4.2")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.2")
    status = await cluster.wait_status(
        "flux-dev", lambda s: len(s.get("history", [])) == 2, "revision 2"
    )
    first, second = status["history"]
    assert (first["release"], first["outcome"]) == ("v1.4.1", "Superseded")
    assert (second["revision"], second["release"], second["outcome"]) == (
        2,
        "v1.4.2",
        "Progressing",
    )
    assert status["phase"] == "Progressing"
    assert condition(status, "Progressing")["status"] == "True"
    assert status["observedGeneration"] == 2

    await cluster.deployment_available("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "revision 2 available"
    )
    assert status["currentRelease"] == "v1.4.2" and status["currentRevision"] == 2


async def test_presets_change_rolls_a_new_config_map(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    status = await _ready(cluster, "flux-dev")
    old_map = status["history"][0]["presetsConfigMap"]
    await cluster.update_spec(
        "flux-dev",
        stylePresets={
            "cyberpunk": {"promptTemplate": "{prompt}, neon lights"},
            "noir": {"promptTemplate": "{prompt}, film noir, black and white"},
        },
    )
    status = await cluster.wait_status(
        "flux-dev", lambda s: len(s.get("history", [])) == 2, "a presets revision"
    )
    new_map = status["history"][1]["presetsConfigMap"]
    assert new_map != old_map and status["history"][1]["release"] == "v1.4.1"
    cm = await cluster.wait_for(lambda: cluster.get("ConfigMap", new_map), "the new ConfigMap")
    assert set(cm["data"]) == {"cyberpunk.json", "noir.json"} and cm["immutable"] is True
    deployment = await cluster.get("Deployment", "flux-dev")
    template = deployment["spec"]["template"]
    assert (
        template["metadata"]["annotations"]["fluxserve.dev/presets-hash"]
        == (status["history"][1]["presetsHash"])
    )
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "presets")
    assert volume["configMap"]["name"] == new_map
    # The previous revision's ConfigMap stays for a rollback.
    assert await cluster.get("ConfigMap", old_map) is not None


async def test_missed_progress_deadline_rolls_back(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    status = await _ready(cluster, "flux-dev")
    good_presets = status["history"][0]["presetsConfigMap"]
    # A new release with new presets: the rollback must restore both.
    await cluster.update_spec(
        "flux-dev",
        release="v1.5.0",
        stylePresets={"noir": {"promptTemplate": "{prompt}, film noir"}},
    )
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.5.0")
    await cluster.wait_status(
        "flux-dev", lambda s: len(s.get("history", [])) == 2, "the new revision in history"
    )
    await cluster.deployment_deadline_exceeded("flux-dev")

    deployment = await _deployment_image_is(
        cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.1"
    )
    template = deployment["spec"]["template"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "presets")
    assert volume["configMap"]["name"] == good_presets
    assert await cluster.get("ConfigMap", good_presets) is not None
    assert (
        template["metadata"]["annotations"]["fluxserve.dev/presets-hash"]
        == (status["history"][0]["presetsHash"])
    )
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "RolledBack", "phase RolledBack"
    )
    rolled_back = condition(status, "RolledBack")
    assert rolled_back["status"] == "True" and "v1.5.0" in rolled_back["message"]
    outcomes = [(e["revision"], e["release"], e["outcome"]) for e in status["history"]]
    assert outcomes == [
        (1, "v1.4.1", "Superseded"),
        (2, "v1.5.0", "RolledBack"),
        (3, "v1.4.1", "Progressing"),
    ]
    assert status["currentRelease"] == "v1.4.1"
    await cluster.wait_event("RolledBack", "v1.5.0")

    # The restored revision becomes available; the failed release is not retried.
    await cluster.deployment_rolling("flux-dev")
    await cluster.deployment_available("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "restored available"
    )
    assert status["phase"] == "RolledBack"
    assert condition(status, "RolledBack")["status"] == "True"
    deployment = await cluster.get("Deployment", "flux-dev")
    assert _image(deployment).endswith(":v1.4.1")

    # A spec change ends the rollback and rolls forward.
    await cluster.update_spec("flux-dev", release="v1.5.1")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.5.1")
    status = await cluster.wait_status(
        "flux-dev", lambda s: condition(s, "RolledBack").get("status") == "False", "rolled forward"
    )
    assert status["history"][-1]["release"] == "v1.5.1"


async def test_missed_deadline_without_auto_rollback_is_degraded(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _ready(
        cluster,
        "flux-dev",
        base_spec(rollout={"progressDeadlineSeconds": 600, "autoRollback": False}),
    )
    await cluster.update_spec("flux-dev", release="v1.5.0")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.5.0")
    await cluster.deployment_deadline_exceeded("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "Degraded", "phase Degraded"
    )
    degraded = condition(status, "Degraded")
    assert (
        degraded["reason"] == "ProgressDeadlineExceeded" and "autoRollback" in degraded["message"]
    )
    assert status["history"][-1]["outcome"] == "Failed"
    deployment = await cluster.get("Deployment", "flux-dev")
    assert _image(deployment).endswith(":v1.5.0")


async def test_rollback_annotation_restores_the_named_release(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _ready(cluster, "flux-dev")
    await cluster.update_spec("flux-dev", release="v1.4.2")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.2")
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status(
        "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "v1.4.2 available"
    )

    await cluster.annotate("flux-dev", "fluxserve.dev/rollback-to", "v1.4.1")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.1")
    status = await cluster.wait_status(
        "flux-dev", lambda s: condition(s, "RolledBack").get("status") == "True", "RolledBack"
    )
    assert condition(status, "RolledBack")["reason"] == "ManualRollback"
    assert [e["outcome"] for e in status["history"]] == ["Superseded", "RolledBack", "Progressing"]
    assert status["history"][-1]["release"] == "v1.4.1"
    # The spec is the user's: the operator never rewrote it.
    body = await cluster.get("FluxDeployment", "flux-dev")
    assert body["spec"]["release"] == "v1.4.2"


async def test_restart_midway_duplicates_nothing(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _ready(cluster, "flux-dev")
    await operator.stop()
    await cluster.update_spec("flux-dev", release="v1.4.2")
    await operator.start()
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.2")
    status = await cluster.wait_status(
        "flux-dev", lambda s: len(s.get("history", [])) == 2, "revision 2"
    )
    # Restart again with nothing changed: nothing new happens.
    await operator.stop()
    await operator.start()
    await cluster.deployment_available("flux-dev")
    status = await cluster.wait_status(
        "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "available"
    )
    assert [e["revision"] for e in status["history"]] == [1, 2]
    deployments = [d for d in await cluster.list("Deployment")]
    assert len(deployments) == 1
    maps = [c for c in await cluster.list("ConfigMap") if "-presets-" in c["metadata"]["name"]]
    assert len(maps) == 1  # same presets, same ConfigMap
    assert operator.crashed() is None


async def test_invalid_spec_is_degraded_not_a_crash(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    # Accepted by the CRD, but a LoRA path needs the model volume the hub source lacks.
    spec = base_spec(
        model={"id": "black-forest-labs/FLUX.1-dev", "source": {"hub": {}}},
        loras=[{"name": "ink", "path": "loras/ink.safetensors"}],
    )
    await cluster.create_fd("flux-bad", spec)
    status = await cluster.wait_status(
        "flux-bad", lambda s: s.get("phase") == "Degraded", "phase Degraded"
    )
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "spec.loras[0].path" in degraded["message"]
    await cluster.wait_event("InvalidSpec", "spec.loras[0].path")
    assert await cluster.get("Deployment", "flux-bad") is None
    assert operator.crashed() is None

    await cluster.update_spec("flux-bad", loras=[])
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-bad"), "the Deployment")
    status = await cluster.wait_status(
        "flux-bad", lambda s: condition(s, "Degraded").get("status") == "False", "not Degraded"
    )


async def test_api_errors_are_retried_without_a_crash(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    deployments = kmock.resource("apps/v1/deployments")
    fluxdeployments = kmock.resource("fluxserve.dev/v1alpha1/fluxdeployments")
    # The first writes fail: a server error creating the Deployment and the Service, a
    # conflict writing the status. (The emulator stores a create even when a reaction
    # answers 500: like a lost response on a real server, after which the retried create
    # finds the object. A PATCH of a missing object gets the emulator's 404 before any
    # reaction.)
    injected = [
        cluster.server["post", deployments][:1] << 500,
        cluster.server["post", kmock.resource("v1/services")][:1] << 500,
        cluster.server["patch", fluxdeployments][:1] << 409,
    ]

    await cluster.create_fd("flux-dev", base_spec())
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-dev"), "the Deployment")
    await cluster.wait_status("flux-dev", lambda s: s.get("history"), "status written")
    assert [len(list(reaction)) for reaction in injected] == [1, 1, 1]  # all were served
    await cluster.deployment_available("flux-dev")
    await cluster.wait_status("flux-dev", lambda s: s.get("phase") == "Ready", "phase Ready")
    assert operator.crashed() is None


async def test_history_and_rollback_commands(
    cluster: Cluster, operator: OperatorHandle, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _ready(cluster, "flux-dev")
    await cluster.update_spec("flux-dev", release="v1.4.2")
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.2")
    await cluster.wait_status("flux-dev", lambda s: len(s.get("history", [])) == 2, "revision 2")

    args = ["--kubeconfig", str(kubeconfig), "-n", NAMESPACE]
    assert await asyncio.to_thread(cli_main, ["history", "flux-dev", *args]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["REVISION", "RELEASE", "OUTCOME"]
    assert table[1].split()[:3] == ["1", "v1.4.1", "Superseded"]
    assert table[2].split()[:3] == ["*2", "v1.4.2", "Progressing"]

    assert await asyncio.to_thread(cli_main, ["rollback", "flux-dev", "--to", "v0.9", *args]) == 1
    assert "v0.9" in capsys.readouterr().err

    assert await asyncio.to_thread(cli_main, ["rollback", "flux-dev", "--to", "v1.4.1", *args]) == 0
    await _deployment_image_is(cluster, "flux-dev", "ghcr.io/acme/fluxserve-server:v1.4.1")
    status = await cluster.wait_status(
        "flux-dev", lambda s: condition(s, "RolledBack").get("status") == "True", "RolledBack"
    )
    assert status["currentRelease"] == "v1.4.1"


async def test_old_config_maps_are_pruned_with_history(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    spec = base_spec(rollout={"progressDeadlineSeconds": 600, "revisionHistoryLimit": 2})
    await _ready(cluster, "flux-dev", spec)
    for i in range(3):
        presets = {"style": {"promptTemplate": "{prompt}, style " + str(i)}}
        await cluster.update_spec("flux-dev", stylePresets=presets)
        await cluster.wait_status(
            "flux-dev", lambda s, n=i + 2: s.get("currentRevision") == n, f"revision {i + 2}"
        )
        await cluster.deployment_available("flux-dev")
        await cluster.wait_status(
            "flux-dev", lambda s: s["history"][-1]["outcome"] == "Available", "available"
        )

    async def pruned() -> list[str] | None:
        names = sorted(
            c["metadata"]["name"]
            for c in await cluster.list("ConfigMap")
            if "-presets-" in c["metadata"]["name"]
        )
        return names if len(names) == 2 else None

    names = await cluster.wait_for(pruned, "two presets ConfigMaps left")
    status = (await cluster.get("FluxDeployment", "flux-dev"))["status"]
    assert [e["revision"] for e in status["history"]] == [3, 4]
    assert names == sorted(e["presetsConfigMap"] for e in status["history"])


async def test_suspend_and_autoscaling_off(cluster: Cluster, operator: OperatorHandle) -> None:
    await _ready(cluster, "flux-dev")
    assert await cluster.get("HorizontalPodAutoscaler", "flux-dev") is not None
    await cluster.update_spec("flux-dev", autoscaling=None, replicas=0)

    async def hpa_gone() -> bool:
        return await cluster.get("HorizontalPodAutoscaler", "flux-dev") is None

    await cluster.wait_for(hpa_gone, "the HPA removed")
    deployment = await cluster.wait_for(
        lambda: _deployment_with_replicas(cluster, "flux-dev", 0), "replicas 0"
    )
    assert deployment["spec"]["replicas"] == 0
    status = await cluster.wait_status(
        "flux-dev", lambda s: condition(s, "Ready").get("reason") == "Suspended", "Suspended"
    )
    assert status["phase"] == "Ready"


async def _deployment_with_replicas(cluster: Cluster, name: str, replicas: int) -> dict | None:
    deployment = await cluster.get("Deployment", name)
    return deployment if deployment and deployment["spec"].get("replicas") == replicas else None


async def test_children_deleted_behind_its_back_are_restored(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await _ready(cluster, "flux-dev")
    # Nothing watches Services: the periodic resync notices the loss.
    await cluster.delete("Service", "flux-dev")
    assert await cluster.wait_for(lambda: cluster.get("Service", "flux-dev"), "Service restored")
    # A Deployment edited by hand is put back by its own watch event.
    await cluster.patch("Deployment", "flux-dev", {"spec": {"progressDeadlineSeconds": 5}})

    async def repaired() -> bool:
        deployment = await cluster.get("Deployment", "flux-dev")
        return bool(deployment and deployment["spec"]["progressDeadlineSeconds"] == 900)

    assert await cluster.wait_for(repaired, "Deployment repaired")


async def test_a_foreign_deployment_of_the_same_name_is_left_alone(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "flux-dev", "namespace": NAMESPACE, "labels": {"team": "other"}},
        "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "nginx"}]}}},
    }
    async with cluster.session.post(cluster.path("Deployment"), json=foreign) as resp:
        resp.raise_for_status()
    await cluster.create_fd("flux-dev", base_spec())
    status = await cluster.wait_status(
        "flux-dev", lambda s: s.get("phase") == "Degraded", "phase Degraded"
    )
    assert condition(status, "Degraded")["reason"] == "ChildConflict"
    await cluster.wait_event("ChildConflict", "Deployment flux-dev")
    deployment = await cluster.get("Deployment", "flux-dev")
    assert _image(deployment) == "nginx"
    assert await cluster.get("Service", "flux-dev") is None

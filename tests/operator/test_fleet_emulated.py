"""Scale to zero through the real operator (kopf) and the API emulator: ``minReplicas: 0``
makes KEDA's ScaledObject and no HPA, ``1`` the HPA and no ScaledObject; without KEDA's
CRD the HPA stays at one worker and status says why, until KEDA is installed; a canary
of the fleet has its own workers, fronts and ScaledObject on the canary track.

The test plays KEDA's installation: it creates KEDA's published CRD object (the file under
tests/operator/keda); no KEDA controller runs, so the emulator shows exactly what the
operator wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import Cluster, OperatorHandle, base_spec, condition
from test_operator_canary import canary_spec, running, serve

NAME = "flux-dev"
KEDA_CRD = Path(__file__).parent / "keda" / "keda.sh_scaledobjects.yaml"
CRDS_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def fleet_spec(min_replicas: int = 0) -> dict[str, Any]:
    return base_spec(
        queue={"url": "redis://queue:6379"},
        autoscaling={"minReplicas": min_replicas, "maxReplicas": 4, "targetQueueDepth": 4},
    )


async def install_keda(cluster: Cluster) -> None:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    async with cluster.session.post(cluster.url + CRDS_URL, json=crd) as resp:
        resp.raise_for_status()


async def autoscalers(cluster: Cluster) -> tuple[Any, Any]:
    hpa = await cluster.get("HorizontalPodAutoscaler", NAME)
    return hpa, await cluster.get("ScaledObject", NAME)


async def wait_keda(cluster: Cluster) -> dict[str, Any]:
    """The ScaledObject is there and the workers' HPA gone."""

    async def only_keda() -> Any:
        hpa, scaled = await autoscalers(cluster)
        return scaled if hpa is None and scaled is not None else None

    return await cluster.wait_for(only_keda, "a ScaledObject and no HPA")


async def wait_hpa(cluster: Cluster) -> dict[str, Any]:
    async def only_hpa() -> Any:
        hpa, scaled = await autoscalers(cluster)
        return hpa if scaled is None and hpa is not None else None

    return await cluster.wait_for(only_hpa, "an HPA and no ScaledObject")


async def test_min_zero_is_a_scaled_object_and_one_an_hpa(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await install_keda(cluster)
    await cluster.create_fd(NAME, fleet_spec(0))
    scaled = await wait_keda(cluster)
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["scaleTargetRef"]["name"] == NAME
    assert await cluster.get("Deployment", f"{NAME}-front") is not None
    front_hpa = await cluster.get("HorizontalPodAutoscaler", f"{NAME}-front")
    assert front_hpa is not None and front_hpa["spec"]["scaleTargetRef"]["name"] == f"{NAME}-front"
    status = await cluster.wait_status(
        NAME, lambda s: condition(s, "ScaleToZero").get("status") == "True", "ScaleToZero True"
    )
    assert condition(status, "ScaleToZero")["reason"] == "KedaScaledObject"

    await cluster.update_spec(NAME, autoscaling={"minReplicas": 1, "maxReplicas": 4})
    hpa = await wait_hpa(cluster)
    assert hpa["spec"]["minReplicas"] == 1
    await cluster.wait_status(NAME, lambda s: not condition(s, "ScaleToZero"), "no ScaleToZero")

    await cluster.update_spec(NAME, autoscaling={"minReplicas": 0, "maxReplicas": 4})
    await wait_keda(cluster)
    assert operator.crashed() is None


async def test_without_keda_one_worker_stays_until_keda_comes(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await cluster.create_fd(NAME, fleet_spec(0))
    hpa = await wait_hpa(cluster)
    assert hpa["spec"]["minReplicas"] == 1  # the HPA cannot go to zero
    status = await cluster.wait_status(
        NAME, lambda s: condition(s, "ScaleToZero").get("status") == "False", "ScaleToZero False"
    )
    scale = condition(status, "ScaleToZero")
    assert scale["reason"] == "KedaNotInstalled" and "install KEDA" in scale["message"]
    assert condition(status, "Degraded").get("status") != "True"

    await install_keda(cluster)  # the periodic pass picks it up
    await wait_keda(cluster)
    await cluster.wait_status(
        NAME, lambda s: condition(s, "ScaleToZero").get("status") == "True", "ScaleToZero True"
    )
    assert operator.crashed() is None


async def test_a_canary_of_the_fleet_has_its_own_track_fronts_and_scaler(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    await install_keda(cluster)
    spec = canary_spec(
        [{"weight": 50, "pause": "1h"}],
        queue={"url": "redis://queue:6379"},
        autoscaling={"minReplicas": 0, "maxReplicas": 4},
    )
    await cluster.create_fd(NAME, spec)
    await running(cluster, NAME, "v1.4.1")
    await serve(cluster, NAME)
    await cluster.wait_status(NAME, lambda s: s.get("phase") == "Ready", "phase Ready")

    await cluster.update_spec(NAME, release="v2")
    canary = await running(cluster, f"{NAME}-canary", "v2")
    args = canary["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--role=worker" in args and "--track=canary" in args
    front = await running(cluster, f"{NAME}-canary-front", "v2")
    assert "--track=canary" in front["spec"]["template"]["spec"]["containers"][0]["args"]
    scaled = await cluster.wait_for(
        lambda: cluster.get("ScaledObject", f"{NAME}-canary"), "the canary's ScaledObject"
    )
    assert scaled["spec"]["minReplicaCount"] >= 1
    stable = await cluster.get("ScaledObject", NAME)
    assert stable is not None and stable["spec"]["triggers"][0]["metadata"]["valueLocation"] == (
        "tracks.stable.high"
    )
    await serve(cluster, f"{NAME}-canary")
    await cluster.annotate(NAME, "fluxserve.dev/canary-promote", "v2")
    await running(cluster, NAME, "v2")
    await serve(cluster, NAME)

    async def canary_gone() -> bool:
        leftovers = [
            await cluster.get("Deployment", f"{NAME}-canary"),
            await cluster.get("Deployment", f"{NAME}-canary-front"),
            await cluster.get("ScaledObject", f"{NAME}-canary"),
        ]
        return leftovers == [None, None, None]

    await cluster.wait_for(canary_gone, "the canary's workers, fronts and scaler removed")
    assert await cluster.get("ScaledObject", NAME) is not None
    assert operator.crashed() is None

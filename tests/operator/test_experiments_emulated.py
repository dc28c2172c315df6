"""The real operator (kopf) against the Kubernetes API emulator: a FluxDeployment with an
A/B experiment gets it in its presets ConfigMap, a weight change is a new revision, a
rollback restores the old weights with the presets, and a bad experiment is Degraded."""

from __future__ import annotations

import copy
import json
from typing import Any

from conftest import Cluster, OperatorHandle, base_spec, condition

from flux_contract.experiments import EXPERIMENTS_FILE

PRESETS = {
    "realistic": {"promptTemplate": "{prompt}, photorealistic, soft light"},
    "impressionist": {"promptTemplate": "{prompt}, impressionist painting"},
    "水墨": {"promptTemplate": "{prompt}, 水墨画, ink wash"},
}
EXPERIMENT: dict[str, Any] = {
    "name": "impressionist-filter",
    "preset": "realistic",
    "audience": {"header": "X-Customer-Group", "values": ["beta", "vip"]},
    "arms": [
        {"name": "control", "preset": "realistic", "weight": 50},
        {"name": "impressionist", "preset": "impressionist", "weight": 30},
        {"name": "ink", "preset": "水墨", "weight": 20},
    ],
    "salt": "2026-12",
}


def _experiments(*weights: int) -> list[dict[str, Any]]:
    experiment = copy.deepcopy(EXPERIMENT)
    for arm, weight in zip(experiment["arms"], weights, strict=True):
        arm["weight"] = weight
    return [experiment]


def _weights(config_map: dict[str, Any]) -> list[int]:
    (experiment,) = json.loads(config_map["data"][EXPERIMENTS_FILE])["experiments"]
    return [arm["weight"] for arm in experiment["arms"]]


async def _presets_volume(cluster: Cluster, name: str, config_map: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        deployment = await cluster.get("Deployment", name)
        if deployment is None:
            return None
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        volume = next(v for v in volumes if v["name"] == "presets")
        return deployment if volume["configMap"]["name"] == config_map else None

    return await cluster.wait_for(check, f"the Deployment mounting {config_map}")


async def test_weight_change_is_a_revision_and_a_rollback_restores_it(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    spec = base_spec(stylePresets=PRESETS, experiments=_experiments(50, 30, 20))
    await cluster.create_fd("flux-styles", spec)
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-styles"), "the Deployment")
    await cluster.deployment_available("flux-styles")
    status = await cluster.wait_status(
        "flux-styles", lambda s: s.get("phase") == "Ready", "phase Ready"
    )
    first = status["history"][0]["presetsConfigMap"]
    cm = await cluster.get("ConfigMap", first)
    assert cm is not None and cm["immutable"] is True
    assert sorted(cm["data"]) == [
        EXPERIMENTS_FILE,
        "impressionist.json",
        "realistic.json",
        "xn--2ost86b.json",
    ]
    assert _weights(cm) == [50, 30, 20]

    # New weights, same release: a new revision with its own ConfigMap.
    await cluster.update_spec("flux-styles", experiments=_experiments(40, 40, 20))
    status = await cluster.wait_status(
        "flux-styles", lambda s: len(s.get("history", [])) == 2, "a revision for the weights"
    )
    second = status["history"][1]["presetsConfigMap"]
    assert second != first and status["history"][1]["release"] == "v1.4.1"
    cm = await cluster.wait_for(lambda: cluster.get("ConfigMap", second), "the new ConfigMap")
    assert _weights(cm) == [40, 40, 20]
    await _presets_volume(cluster, "flux-styles", second)

    # The new revision never becomes ready: the rollback mounts the old weights again.
    await cluster.deployment_deadline_exceeded("flux-styles")
    deployment = await _presets_volume(cluster, "flux-styles", first)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["fluxserve.dev/presets-hash"] == status["history"][0]["presetsHash"]
    status = await cluster.wait_status(
        "flux-styles", lambda s: s.get("phase") == "RolledBack", "phase RolledBack"
    )
    assert [e["outcome"] for e in status["history"]] == ["Superseded", "RolledBack", "Progressing"]
    restored = await cluster.get("ConfigMap", first)
    assert restored is not None and _weights(restored) == [50, 30, 20]
    assert operator.crashed() is None


async def test_a_bad_experiment_is_degraded_and_the_operator_keeps_running(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    bad = _experiments(50, 30, 10)  # sums to 90
    await cluster.create_fd("flux-styles", base_spec(stylePresets=PRESETS, experiments=bad))
    status = await cluster.wait_status(
        "flux-styles", lambda s: s.get("phase") == "Degraded", "phase Degraded"
    )
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert degraded["message"].startswith(
        "spec.experiments[0].arms: weights must sum to 100, got 90"
    )
    assert await cluster.get("Deployment", "flux-styles") is None
    await cluster.wait_event("InvalidSpec", "weights must sum to 100")

    # Fixed: served, and the operator never crashed in between.
    await cluster.update_spec("flux-styles", experiments=_experiments(50, 30, 20))
    await cluster.wait_for(lambda: cluster.get("Deployment", "flux-styles"), "the Deployment")
    maps = [c for c in await cluster.list("ConfigMap") if "-presets-" in c["metadata"]["name"]]
    assert len(maps) == 1 and _weights(maps[0]) == [50, 30, 20]
    assert operator.crashed() is None

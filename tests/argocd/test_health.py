"""ArgoCD's health check for FluxDeployment, run as ArgoCD runs it.

ArgoCD evaluates `resource.customizations.health.<group>_<Kind>` with gopher-lua
(Lua 5.1): the live object is the global `obj`, the chunk returns a table with
`status` and `message`, and the io/os libraries are not there. lupa's Lua 5.1
runtime does the same here. Every status fixture is first validated against the
real CRD's schema, so the fixtures cannot drift from what the operator writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm-health.yaml"
CRD = ROOT / "crds" / "fluxserve.dev_fluxdeployments.yaml"
HEALTH_KEY = "resource.customizations.health.fluxserve.dev_FluxDeployment"
APP_HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"
NOW = "2026-01-01T00:00:00Z"


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused (the API server would prune them silently)."""
    out = copy.deepcopy(schema)
    stack = [out]
    while stack:
        node = stack.pop()
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            if isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, dict))
    return out


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return _strict(version["schema"]["openAPIV3Schema"])


def _script(key: str) -> str:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    return str(cm["data"][key])


def run_health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime()
    env = lua.globals()
    for unavailable in ("io", "os", "require", "dofile", "loadfile"):
        env[unavailable] = None
    env.obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script)
    assert hs is not None, "the health script returned nothing"
    return str(hs["status"]), str(hs["message"])


def cond(kind: str, status: str, reason: str = "Reason", message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }


def fxd(
    status: dict[str, Any] | None,
    *,
    generation: int = 3,
    replicas: int = 2,
    autoscaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "release": "v1.2.3",
        "model": {"id": "black-forest-labs/FLUX.1-dev", "source": {"hub": {}}},
        "replicas": replicas,
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    obj: dict[str, Any] = {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux", "namespace": "inference", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def history(*outcomes: str) -> list[dict[str, Any]]:
    return [
        {
            "revision": i + 1,
            "release": f"v1.2.{i + 1}",
            "image": f"ghcr.io/fluxserve/fluxserve-server:v1.2.{i + 1}",
            "presetsHash": "0123456789",
            "presetsConfigMap": "flux-presets-0123456789",
            "time": NOW,
            "outcome": outcome,
        }
        for i, outcome in enumerate(outcomes)
    ]


READY = {
    "observedGeneration": 3,
    "phase": "Ready",
    "conditions": [
        cond("Ready", "True", "Available", "2/2 pods ready"),
        cond("Progressing", "False", "RolloutComplete"),
        cond("Degraded", "False", "AsExpected"),
        cond("RolledBack", "False", "NoRollback"),
    ],
    "replicas": 2,
    "readyReplicas": 2,
    "selector": "app.kubernetes.io/instance=flux",
    "currentRelease": "v1.2.3",
    "currentRevision": 3,
    "history": history("Superseded", "Superseded", "Available"),
}

ROLLING = {
    **READY,
    "phase": "Progressing",
    "conditions": [
        cond("Ready", "True", "Available", "old pods still serve"),
        cond("Progressing", "True", "NewRevision", "rolling out v1.2.4: 1/2 pods updated"),
        cond("Degraded", "False", "AsExpected"),
        cond("RolledBack", "False", "NoRollback"),
    ],
    "history": history("Superseded", "Available", "Progressing"),
}

ROLLED_BACK = {
    **READY,
    "phase": "RolledBack",
    "conditions": [
        cond("Ready", "True", "Available", "2/2 pods ready"),
        cond("Progressing", "False", "RolledBack"),
        cond("Degraded", "False", "AsExpected"),
        cond(
            "RolledBack",
            "True",
            "ProgressDeadlineExceeded",
            "v1.2.4 missed its 900s progress deadline; restored v1.2.3",
        ),
    ],
    "currentRelease": "v1.2.3",
    "currentRevision": 4,
    "history": history("Superseded", "RolledBack", "Available"),
}

DEGRADED = {
    **READY,
    "phase": "Degraded",
    "conditions": [
        cond("Ready", "False", "NoPodsReady"),
        cond("Progressing", "False", "Failed"),
        cond("Degraded", "True", "InvalidSpec", "spec.model.source.pvc: claim 'weights' not found"),
        cond("RolledBack", "False", "NoRollback"),
    ],
    "readyReplicas": 0,
    "history": history("Failed"),
}

PENDING = {"observedGeneration": 3, "phase": "Pending", "conditions": []}

SUSPENDED = {
    **READY,
    "replicas": 0,
    "readyReplicas": 0,
    "conditions": [
        cond("Ready", "False", "ScaledToZero"),
        cond("Progressing", "False", "RolloutComplete"),
        cond("Degraded", "False", "AsExpected"),
        cond("RolledBack", "False", "NoRollback"),
    ],
}

CASES = {
    # name: (object, expected health, a word the message must carry)
    "no-status-yet": (fxd(None), "Progressing", "observe"),
    "pending": (fxd(PENDING), "Progressing", "Pending"),
    "ready": (fxd(READY), "Healthy", "v1.2.3"),
    "rolling-out": (fxd(ROLLING), "Progressing", "rolling out v1.2.4"),
    "rolled-back": (fxd(ROLLED_BACK), "Degraded", "missed its 900s progress deadline"),
    "rolled-back-phase-only": (
        fxd({**ROLLED_BACK, "conditions": []}),
        "Degraded",
        "Rolled back",
    ),
    "degraded": (fxd(DEGRADED), "Degraded", "claim 'weights' not found"),
    "degraded-phase-only": (fxd({**DEGRADED, "conditions": []}), "Degraded", "degraded"),
    # The spec moved on (e.g. a new release after a rollback): old status is stale.
    "stale-after-rollback": (fxd(ROLLED_BACK, generation=4), "Progressing", "generation 4"),
    "stale-ready": (fxd(READY, generation=4), "Progressing", "generation 4"),
    "suspended": (fxd(SUSPENDED, replicas=0), "Suspended", "zero"),
    "zero-replicas-but-autoscaled": (
        fxd({**SUSPENDED, "phase": "Progressing"}, replicas=0, autoscaling={"maxReplicas": 4}),
        "Progressing",
        "",
    ),
    "ready-condition-but-phase-progressing": (
        fxd({**READY, "phase": "Progressing"}),
        "Progressing",
        "",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_matches_the_crd(name: str, crd_schema: dict[str, Any]) -> None:
    obj, _, _ = CASES[name]
    jsonschema.validate(obj, crd_schema)


@pytest.mark.parametrize("name", list(CASES))
def test_health(name: str) -> None:
    obj, expected, word = CASES[name]
    status, message = run_health(_script(HEALTH_KEY), obj)
    assert status == expected, (name, status, message)
    assert word in message, (name, message)


def test_rolled_back_is_never_healthy() -> None:
    """Whatever else the status says, a rollback in force is not Healthy."""
    script = _script(HEALTH_KEY)
    for phase in ("Ready", "RolledBack", "Progressing"):
        status = {**ROLLED_BACK, "phase": phase}
        assert run_health(script, fxd(status))[0] == "Degraded", phase


def test_condition_without_message_falls_back_to_reason() -> None:
    status = {
        **DEGRADED,
        "conditions": [{**cond("Degraded", "True", "ImagePullBackOff"), "message": ""}],
    }
    assert run_health(_script(HEALTH_KEY), fxd(status)) == ("Degraded", "ImagePullBackOff")


@pytest.mark.parametrize(
    ("app_status", "expected"),
    [
        (None, "Progressing"),
        ({"health": {"status": "Healthy"}}, "Healthy"),
        ({"health": {"status": "Degraded", "message": "Rolled back"}}, "Degraded"),
    ],
)
def test_application_health_lets_sync_waves_wait(
    app_status: dict[str, Any] | None, expected: str
) -> None:
    """Without this check ArgoCD treats child Applications as healthy at once, and the
    FluxDeployments wave would not wait for the operator's."""
    obj: dict[str, Any] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application"}
    if app_status is not None:
        obj["status"] = app_status
    assert run_health(_script(APP_HEALTH_KEY), obj)[0] == expected


def test_health_of_the_statuses_the_operator_writes() -> None:
    """Not hand-written fixtures: the statuses reconcile.plan_rollout writes through a release's
    life (rolling out, available, a missed deadline rolled back, rolled forward), then a
    suspended spec and one the operator cannot serve."""
    from flux_operator.reconcile import Children, Snapshot, degraded_status, plan_rollout
    from flux_operator.render import Owner, Revision, render_deployment
    from flux_operator.spec import FluxDeploymentSpec, FluxDeploymentStatus

    owner = Owner(name="flux", namespace="inference", uid="u-1")
    script = _script(HEALTH_KEY)
    raw: dict[str, Any] = {
        "release": "v1.2.3",
        "model": {"id": "black-forest-labs/FLUX.1-dev", "source": {"hub": {}}},
    }
    status = FluxDeploymentStatus()
    generation = 1
    running: Revision | None = None  # what the operator last told the Deployment to run

    def health(status: FluxDeploymentStatus) -> tuple[str, str]:
        body = {
            "apiVersion": "fluxserve.dev/v1alpha1",
            "kind": "FluxDeployment",
            "metadata": {"name": "flux", "generation": generation},
            "spec": raw,
            "status": status.model_dump(by_alias=True, exclude_none=True),
        }
        return run_health(script, body)

    def step(progress: str | None = None, **spec_changes: Any) -> str:
        nonlocal status, generation, running
        if spec_changes:
            raw.update(spec_changes)
            generation += 1
        spec = FluxDeploymentSpec.model_validate(raw)
        deployment = None
        if progress is not None and running is not None:
            # The Deployment of the running revision, as its controller reports it.
            deployment = render_deployment(owner, spec, running)
            deployment["metadata"]["generation"] = 1
            ready = int(progress == "NewReplicaSetAvailable")
            deployment["status"] = {
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": ready,
                "updatedReplicas": 1,
                "availableReplicas": ready,
                "conditions": [
                    {"type": "Progressing", "status": str(bool(ready)), "reason": progress}
                ],
            }
        seen = Children(deployment=deployment)
        decided = plan_rollout(Snapshot(owner, spec, status, NOW, generation, children=seen))
        status, running = decided.status, decided.revision
        return health(status)[0]

    assert step() == "Progressing"
    assert step("NewReplicaSetAvailable") == "Healthy"
    assert step(release="v1.2.4") == "Progressing"
    assert step("ProgressDeadlineExceeded") == "Degraded"  # rolled back to v1.2.3
    assert status.phase == "RolledBack" and "v1.2.4" in health(status)[1]
    assert step("NewReplicaSetAvailable") == "Degraded"  # serving, not the release in git
    assert step(release="v1.2.5") == "Progressing"
    assert step("NewReplicaSetAvailable") == "Healthy"
    assert step("NewReplicaSetAvailable", replicas=0) == "Suspended"
    broken = degraded_status(status, generation, "InvalidSpec", "spec.x: bad", NOW)
    assert health(broken) == ("Degraded", "spec.x: bad")

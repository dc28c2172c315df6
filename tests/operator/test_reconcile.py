"""reconcile.plan: the rollout and rollback decisions, without any API."""

from __future__ import annotations

from typing import Any

from flux_operator.reconcile import plan
from flux_operator.render import ROLLBACK_ANNOTATION, Owner, render_deployment
from flux_operator.spec import FluxDeploymentSpec, FluxDeploymentStatus

OWNER = Owner(name="flux-dev", namespace="studio", uid="u-1")


def _spec(**changes: Any) -> FluxDeploymentSpec:
    base: dict[str, Any] = {
        "release": "v1",
        "image": "ghcr.io/acme/server",
        "model": {"id": "m", "source": {"pvc": {"claimName": "w"}}},
        "rollout": {"revisionHistoryLimit": 3},
    }
    base.update(changes)
    return FluxDeploymentSpec.model_validate(base)


def _deployment(
    spec: FluxDeploymentSpec, status: FluxDeploymentStatus, state: str, generation: int = 1
) -> dict[str, Any]:
    """The Deployment the operator would have written for the current revision, with a
    status as the Deployment controller would report it."""
    entry = next(e for e in status.history if e.revision == status.current_revision)
    from flux_operator.render import Revision

    revision = Revision(entry.release, entry.image, entry.presets_hash, entry.presets_config_map)
    deployment = render_deployment(OWNER, spec, revision)
    deployment["metadata"]["generation"] = generation
    conditions = {
        "available": ("True", "NewReplicaSetAvailable"),
        "rolling": ("True", "ReplicaSetUpdated"),
        "deadline": ("False", "ProgressDeadlineExceeded"),
    }[state]
    deployment["status"] = {
        "observedGeneration": generation,
        "replicas": 1,
        "readyReplicas": 1 if state == "available" else 0,
        "updatedReplicas": 1,
        "availableReplicas": 1 if state == "available" else 0,
        "conditions": [{"type": "Progressing", "status": conditions[0], "reason": conditions[1]}],
    }
    return deployment


def _step(
    spec: FluxDeploymentSpec,
    status: FluxDeploymentStatus,
    deployment: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    generation: int = 1,
):  # type: ignore[no-untyped-def]
    return plan(
        OWNER, spec, status, annotations or {}, generation, deployment, "2026-01-01T00:00:00Z"
    )


def _available(spec: FluxDeploymentSpec, generation: int = 1) -> FluxDeploymentStatus:
    status = _step(spec, FluxDeploymentStatus(), generation=generation).status
    return _step(spec, status, _deployment(spec, status, "available"), generation=generation).status


def test_first_plan_starts_revision_one() -> None:
    result = _step(_spec(), FluxDeploymentStatus())
    assert result.status.phase == "Pending"
    assert [(e.revision, e.outcome) for e in result.status.history] == [(1, "Progressing")]
    assert [e.reason for e in result.events] == ["RolloutStarted"]
    assert result.revision is not None and result.revision.image == "ghcr.io/acme/server:v1"


def test_plan_is_stable_when_nothing_changes() -> None:
    spec = _spec()
    status = _available(spec)
    again = _step(spec, status, _deployment(spec, status, "available"))
    assert again.status == status and again.events == []


def test_a_stale_deployment_status_is_not_trusted() -> None:
    spec = _spec()
    status = _step(spec, FluxDeploymentStatus()).status
    deployment = _deployment(spec, status, "available")
    deployment["metadata"]["generation"] = 2  # a newer template the controller has not seen
    result = _step(spec, status, deployment)
    assert result.status.history[-1].outcome == "Progressing"


def test_deadline_without_a_healthy_revision_is_degraded() -> None:
    spec = _spec()
    status = _step(spec, FluxDeploymentStatus()).status
    result = _step(spec, status, _deployment(spec, status, "deadline"))
    assert result.status.phase == "Degraded"
    assert result.status.history[-1].outcome == "Failed"
    degraded = next(c for c in result.status.conditions if c.type == "Degraded")
    assert "no healthy revision" in degraded.message
    assert [e.reason for e in result.events] == ["RolloutFailed"]


def test_auto_rollback_holds_until_the_spec_changes() -> None:
    good = _spec()
    status = _available(good)
    bad = _spec(release="v2")
    status = _step(bad, status, generation=2).status
    result = _step(bad, status, _deployment(bad, status, "deadline", generation=2), generation=2)
    assert result.revision is not None and result.revision.release == "v1"
    assert result.status.rollback is not None and result.status.rollback.from_release == "v2"
    status = result.status
    # Same generation: still rolled back, the failed release is not retried.
    again = _step(bad, status, _deployment(bad, status, "available", generation=3), generation=2)
    assert again.revision is not None and again.revision.release == "v1"
    assert again.status.phase == "RolledBack"
    # A new generation: the spec wins again.
    fixed = _spec(release="v3")
    forward = _step(fixed, again.status, generation=3)
    assert forward.revision is not None and forward.revision.release == "v3"
    assert forward.status.rollback is None
    rolled = next(c for c in forward.status.conditions if c.type == "RolledBack")
    assert rolled.status == "False"


def test_rollback_annotation_is_acted_on_once() -> None:
    spec = _spec()
    status = _available(spec)
    newer = _spec(release="v2")
    status = _step(newer, status, generation=2).status
    annotations = {ROLLBACK_ANNOTATION: "v1"}
    result = _step(newer, status, annotations=annotations, generation=2)
    assert result.revision is not None and result.revision.release == "v1"
    assert result.status.handled_rollback_to == "v1"
    assert [e.reason for e in result.events] == ["RolledBack"]
    again = _step(newer, result.status, annotations=annotations, generation=2)
    assert again.events == [] and len(again.status.history) == len(result.status.history)


def test_rollback_to_an_unknown_release_is_reported() -> None:
    spec = _spec()
    status = _available(spec)
    result = _step(spec, status, annotations={ROLLBACK_ANNOTATION: "v0"})
    assert [e.reason for e in result.events] == ["RollbackTargetNotFound"]
    assert result.revision is not None and result.revision.release == "v1"


def test_history_is_pruned_but_keeps_the_last_healthy_revision() -> None:
    spec = _spec()
    status = _available(spec)
    for generation, release in enumerate(["v2", "v3", "v4", "v5"], start=2):
        spec = _spec(release=release)
        status = _step(spec, status, generation=generation).status
    revisions = [e.revision for e in status.history]
    assert revisions == [1, 3, 4, 5]  # limit 3, plus revision 1: the last one available
    assert status.history[0].available_time is not None

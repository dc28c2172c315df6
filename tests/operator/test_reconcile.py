"""reconcile.plan: the rollout and rollback decisions, without any API."""

from __future__ import annotations

from typing import Any

from flux_operator.reconcile import Children, Snapshot, plan, plan_rollout
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
    return plan_rollout(
        Snapshot(
            OWNER,
            spec,
            status,
            "2026-01-01T00:00:00Z",
            generation,
            annotations=annotations or {},
            children=Children(deployment=deployment),
        )
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


def test_a_failed_release_keeps_its_degraded_message_on_later_rounds() -> None:
    # The round that sees the deadline and every round after it say the same thing,
    # and why it was not rolled back.
    spec = _spec(release="v2", rollout={"autoRollback": False})
    status = _available(_spec(rollout={"autoRollback": False}))
    status = _step(spec, status, generation=2).status
    deadline = _deployment(spec, status, "deadline", generation=2)
    first = _step(spec, status, deadline, generation=2)
    again = _step(spec, first.status, deadline, generation=2)
    messages = [
        next(c for c in r.status.conditions if c.type == "Degraded").message for r in (first, again)
    ]
    assert messages[0] == messages[1]
    assert "autoRollback is off" in messages[1] and "release v2 (revision 2)" in messages[1]


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


# --- plan(): the resources that cannot be served --------------------------------------------

NOW = "2026-01-01T00:00:00Z"


def _body(spec: dict[str, Any], status: FluxDeploymentStatus | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid},
        "spec": spec,
        "status": status.model_dump(by_alias=True, exclude_none=True) if status else {},
    }


def _raw_spec(**changes: Any) -> dict[str, Any]:
    return _spec(**changes).model_dump(by_alias=True, exclude_none=True)


def _degraded(result: Any) -> tuple[str, str]:
    condition = next(c for c in result.status.conditions if c.type == "Degraded")
    assert condition.status == "True" and result.status.phase == "Degraded"
    return condition.reason, condition.message


def test_an_invalid_spec_is_degraded_and_warned_of_once() -> None:
    body = _body({**_raw_spec(), "replicas": -1})
    result = plan(body, Children(), NOW)
    assert result.revision is None and result.spec is None
    reason, message = _degraded(result)
    assert reason == "InvalidSpec" and "spec.replicas" in message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]
    again = plan(_body(body["spec"], result.status), Children(), NOW)
    assert again.events == [] and _degraded(again) == (reason, message)


def test_a_child_of_someone_else_is_left_alone() -> None:
    foreign = {"kind": "Service", "metadata": {"name": OWNER.name, "ownerReferences": []}}
    result = plan(_body(_raw_spec()), Children(service=foreign), NOW)
    assert result.revision is None
    reason, message = _degraded(result)
    assert reason == "ChildConflict" and message.startswith(f"Service {OWNER.name} ")
    assert [e.reason for e in result.events] == ["ChildConflict"]
    again = plan(_body(_raw_spec(), result.status), Children(service=foreign), NOW)
    assert again.events == []


def test_an_unmanaged_autoscaler_only_conflicts_when_autoscaling_is_on() -> None:
    foreign = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": OWNER.name}}
    assert plan(_body(_raw_spec()), Children(autoscaler=foreign), NOW).revision is not None
    scaling = {"minReplicas": 1, "maxReplicas": 2}
    result = plan(_body(_raw_spec(autoscaling=scaling)), Children(autoscaler=foreign), NOW)
    assert _degraded(result)[0] == "ChildConflict"


def test_a_rollback_whose_presets_are_gone_is_degraded() -> None:
    spec = _spec()
    status = _available(spec)
    newer = _spec(release="v2", stylePresets={"x": {"promptTemplate": "{prompt}, x"}})
    status = _step(newer, status, generation=2).status
    body = _body(newer.model_dump(by_alias=True, exclude_none=True), status)
    body["metadata"]["generation"] = 2
    body["metadata"]["annotations"] = {ROLLBACK_ANNOTATION: "v1"}
    listed = Children(config_maps=())  # listed: none left
    result = plan(body, listed, NOW)
    assert result.revision is None
    reason, message = _degraded(result)
    assert reason == "PresetsMissing" and "release v1" in message
    assert [e.reason for e in result.events] == ["RolledBack", "PresetsMissing"]
    # Not listed (unknown): taken to exist, and the rollback goes ahead.
    assert plan(body, Children(), NOW).revision is not None

"""reconcile.plan with strategy Canary: what runs where, the pods, the abort rules, and
refusals, without any API (the emulator tests run the same through kopf)."""

from __future__ import annotations

from typing import Any

from flux_operator.reconcile import Children, plan
from flux_operator.reconcile.canary_pods import pod_counts, promotion_pods
from flux_operator.render import TRACK_LABEL, Owner, Revision, render_deployment
from flux_operator.render.children import render_all
from flux_operator.spec import FluxDeploymentSpec, FluxDeploymentStatus

OWNER = Owner(name="flux", namespace="studio", uid="u-1")
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:05Z"


def _raw(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "release": "v1",
        "image": "ghcr.io/acme/server",
        "model": {"id": "m", "source": {"pvc": {"claimName": "w"}}},
        "replicas": 4,
        "rollout": {
            "strategy": "Canary",
            "canary": {"maxSurge": 1, "steps": [{"weight": 25, "pause": "10m"}, {"weight": 50}]},
        },
    }
    spec.update(changes)
    return spec


def _body(spec: dict[str, Any], status: FluxDeploymentStatus | None, generation: int = 1) -> dict:
    dumped = status.model_dump(by_alias=True, exclude_none=True) if status else None
    return {
        "metadata": {
            "name": OWNER.name,
            "namespace": OWNER.namespace,
            "uid": OWNER.uid,
            "generation": generation,
        },
        "spec": spec,
        "status": dumped,
    }


def _served(
    spec: dict[str, Any],
    entry_release: str,
    name: str = "flux",
    state: str = "ok",
    replicas: int = 4,
) -> dict[str, Any]:
    """A Deployment running ``entry_release`` of ``spec`` (presets as the spec's)."""
    parsed = FluxDeploymentSpec.model_validate({**spec, "release": entry_release})
    from flux_operator.render import desired_revision

    revision: Revision = desired_revision(OWNER, parsed)
    deployment = render_deployment(OWNER, parsed, revision)
    deployment["metadata"].update(name=name, generation=1)
    progressing = (
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
        if state == "ok"
        else {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "timed out",
        }
    )
    deployment["spec"]["replicas"] = replicas
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "readyReplicas": replicas if state == "ok" else 0,
        "updatedReplicas": replicas,
        "availableReplicas": replicas if state == "ok" else 0,
        "conditions": [progressing],
    }
    return deployment


def _v1_available() -> FluxDeploymentStatus:
    spec = _raw()
    first = plan(_body(spec, None), Children(), T0)
    return plan(_body(spec, first.status), Children(deployment=_served(spec, "v1")), T0).status


def test_the_first_revision_rolls_out_as_usual_and_carries_the_stable_track() -> None:
    status = _v1_available()
    assert status.phase == "Ready" and status.canary is None
    objects = render_all(
        OWNER, FluxDeploymentSpec.model_validate(_raw(gateway={"parentRefs": [{"name": "gw"}]}))
    )
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert ("Service", "flux-stable") in kinds and ("HTTPRoute", "flux") in kinds
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] == "stable"


def test_a_rolling_update_resource_with_a_gateway_routes_to_its_service() -> None:
    raw = _raw(gateway={"parentRefs": [{"name": "gw"}]})
    del raw["rollout"]
    objects = render_all(OWNER, FluxDeploymentSpec.model_validate(raw))
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "flux", "port": 8080, "weight": 100}
    ]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert TRACK_LABEL not in deployment["spec"]["template"]["metadata"]["labels"]


def test_a_new_release_starts_a_canary_beside_the_stable_revision() -> None:
    spec = _raw(release="v2")
    decided = plan(_body(spec, _v1_available(), 2), Children(deployment=_served(spec, "v1")), T1)
    assert decided.revision is not None and decided.revision.release == "v1"
    assert decided.canary is not None and decided.canary.revision is not None
    assert decided.canary.revision.release == "v2"
    assert decided.canary.weight == 0  # nothing routed before a canary pod is ready
    assert (decided.canary.stable_replicas, decided.canary.canary_replicas) == (4, 1)
    canary = decided.status.canary
    assert canary is not None and canary.phase == "Starting" and canary.summary == "v2@25% Starting"
    assert decided.status.current_release == "v1"
    assert [(e.release, e.outcome) for e in decided.status.history] == [
        ("v1", "Available"),
        ("v2", "Progressing"),
    ]
    assert [e.reason for e in decided.events] == ["CanaryStarted"]


def test_a_canary_missing_its_progress_deadline_is_aborted() -> None:
    spec = _raw(release="v2")
    children = Children(deployment=_served(spec, "v1"))
    started = plan(_body(spec, _v1_available(), 2), children, T1).status
    late = Children(
        deployment=_served(spec, "v1"),
        canary_deployment=_served(spec, "v2", name="flux-canary", state="deadline", replicas=1),
    )
    decided = plan(_body(spec, started, 2), late, T1)
    assert decided.canary is not None and decided.canary.revision is None
    assert decided.revision is not None and decided.revision.release == "v1"
    assert decided.status.canary is not None and decided.status.canary.phase == "Aborted"
    assert decided.status.history[-1].outcome == "Failed"
    rolled_back = next(c for c in decided.status.conditions if c.type == "RolledBack")
    assert rolled_back.status == "True" and "progress deadline" in rolled_back.message
    assert [e.reason for e in decided.events] == ["CanaryAborted"]
    # The same generation does not try it again.
    again = plan(_body(spec, decided.status, 2), children, T1)
    assert again.canary is not None and again.canary.revision is None
    assert len(again.status.history) == 2


def test_the_spec_back_on_the_stable_release_ends_the_canary() -> None:
    spec = _raw(release="v2")
    started = plan(_body(spec, _v1_available(), 2), Children(deployment=_served(spec, "v1")), T1)
    back = _raw(release="v1")
    decided = plan(_body(back, started.status, 3), Children(deployment=_served(back, "v1")), T1)
    assert decided.status.canary is None
    assert decided.canary is not None and decided.canary.revision is None
    assert [(e.release, e.outcome) for e in decided.status.history] == [
        ("v1", "Available"),
        ("v2", "Superseded"),
    ]


def test_a_canary_no_schema_can_refuse_is_degraded_naming_the_field() -> None:
    raw = _raw(release="v2")
    raw["rollout"]["canary"]["steps"] = [{"weight": 50, "pause": "1m"}, {"weight": 10}]
    decided = plan(_body(raw, _v1_available(), 2), Children(), T1)
    assert decided.revision is None and decided.canary is None
    degraded = next(c for c in decided.status.conditions if c.type == "Degraded")
    assert degraded.reason == "InvalidCanary"
    assert "spec.rollout.canary.steps[1].weight" in degraded.message


def _pods(max_surge: int, weight: int, autoscaling: bool, asked: int | None = None) -> tuple:
    raw = _raw()
    raw["rollout"]["canary"]["maxSurge"] = max_surge
    if autoscaling:
        raw["autoscaling"] = {"minReplicas": 4, "maxReplicas": 8}
    spec = FluxDeploymentSpec.model_validate(raw)
    hpa = {"status": {"desiredReplicas": asked}} if asked is not None else None
    return pod_counts(spec, weight, stable={"spec": {"replicas": 4}}, autoscaler=hpa)


def test_pods_without_autoscaling_follow_split_pods() -> None:
    assert _pods(1, 25, False) == (4, 1, 0)
    assert _pods(1, 50, False) == (3, 2, 0)
    assert _pods(0, 50, False) == (2, 2, 0)


def test_with_autoscaling_the_hpa_count_is_shared() -> None:
    # maxSurge >= 1: the canary's share of T, capped at maxSurge, as extra pods.
    assert _pods(1, 50, True, asked=6) == (None, 1, 0)
    assert _pods(2, 50, True, asked=6) == (None, 2, 0)
    # maxSurge 0: the share of T, taken from the stable side through the HPA's bounds.
    assert _pods(0, 50, True, asked=6) == (None, 3, 3)
    assert _pods(0, 10, True, asked=6) == (None, 1, 1)
    # Before the HPA has a count: the stable Deployment's replicas.
    assert _pods(0, 50, True) == (None, 2, 2)


def test_turning_the_strategy_off_mid_canary_ends_the_canary() -> None:
    spec = _raw(release="v2")
    started = plan(_body(spec, _v1_available(), 2), Children(deployment=_served(spec, "v1")), T1)
    plain = _raw(release="v2")
    del plain["rollout"]
    decided = plan(_body(plain, started.status, 3), Children(deployment=_served(plain, "v1")), T1)
    assert decided.status.canary is None and decided.canary is None
    assert decided.revision is not None and decided.revision.release == "v2"
    assert [(e.release, e.outcome) for e in decided.status.history] == [
        ("v1", "Superseded"),
        ("v2", "Superseded"),
        ("v2", "Progressing"),
    ]


def _promotion(
    max_surge: int, autoscaling: bool, stable: int | None, canary: int
) -> tuple[int | None, int, int]:
    raw = _raw()
    raw["rollout"]["canary"]["maxSurge"] = max_surge
    if autoscaling:
        raw["autoscaling"] = {"minReplicas": 4, "maxReplicas": 8}
    return promotion_pods(FluxDeploymentSpec.model_validate(raw), stable, canary)


def test_a_promotion_rolls_the_stable_side_within_the_surge_budget() -> None:
    # 4 pods, maxSurge 1, promoted at 50%: NAME had 3 and the canary 2 (one extra in
    # use): NAME keeps 3 and replaces them one at a time, never 6 or 7 pods at once.
    assert _promotion(1, False, stable=3, canary=2) == (3, 0, 0)
    # Promoted at 25% (NAME 4, canary 1): the one extra pod is the canary's.
    assert _promotion(1, False, stable=4, canary=1) == (4, 0, 0)
    # A larger budget leaves NAME what the canary does not use.
    assert _promotion(3, False, stable=4, canary=1) == (4, 0, 2)
    # maxSurge 0: the canary's pods came out of NAME's; no extra pod at any time.
    assert _promotion(0, False, stable=2, canary=2) == (2, 0, 0)
    # Autoscaling: the HPA keeps NAME's count (maxSurge >= 1) or its lowered bounds (0).
    assert _promotion(2, True, stable=None, canary=1) == (None, 0, 1)
    assert _promotion(0, True, stable=None, canary=3) == (None, 3, 0)


def test_the_stable_deployment_rolls_with_the_surge_it_is_given() -> None:
    from flux_operator.render import render_stable_deployment

    spec = FluxDeploymentSpec.model_validate(_raw())
    rendered = render_deployment(OWNER, spec, _revision(spec))
    as_rendered = render_stable_deployment(rendered, 3)
    assert as_rendered["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    none_left = render_stable_deployment(rendered, 3, surge=0)
    assert none_left["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert none_left["spec"]["replicas"] == 3
    some_left = render_stable_deployment(rendered, None, surge=2)
    assert some_left["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 2, "maxUnavailable": 0}


def _revision(spec: FluxDeploymentSpec) -> Revision:
    from flux_operator.render import desired_revision

    return desired_revision(OWNER, spec)

"""Decide, without I/O, what one reconciliation does.

``plan(body, children, now)`` takes the resource as read, its children as read and the
time, and returns a ``Plan``: the status to write, the events to post and, when the
resource can be served, the revision to run. The reconciler applies it. Everything a test
of rollouts, rollbacks and Degraded resources needs to reason about is here.

A decision about another kind of child (a second Deployment for a canary, a route that
splits traffic) belongs beside ``plan_rollout``: a pure step that reads ``Children`` and
adds to the ``Plan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flux_operator.reconcile.canary_rollout import (
    CanaryOutcome,
    leave_canary,
    plan_canary,
)
from flux_operator.reconcile.children import Children, foreign_children
from flux_operator.reconcile.conditions import (
    canary_conditions,
    conditions_and_phase,
    degraded_status,
    scale_to_zero,
)
from flux_operator.reconcile.events import Event
from flux_operator.reconcile.history import prune_history
from flux_operator.reconcile.observed import Observed
from flux_operator.reconcile.rollout import (
    Work,
    failed_release_message,
    manual_rollback,
    observe,
    start_revision_if_new,
    target_revision,
)
from flux_operator.render import (
    ROLLBACK_ANNOTATION,
    CanaryRun,
    Owner,
    Revision,
    desired_revision,
    selector_string,
)
from flux_operator.spec import (
    FluxDeploymentSpec,
    FluxDeploymentStatus,
    HistoryEntry,
    Measurement,
    parse_time,
)
from flux_operator.validation import spec_problems, validate_canary


@dataclass
class Plan:
    """What to do: write ``status`` and post ``events``; with a ``revision``, also apply
    ``spec``'s children running it. Without one the children are left as they are (the
    resource cannot be served, and ``status`` says why)."""

    revision: Revision | None
    status: FluxDeploymentStatus
    events: list[Event] = field(default_factory=list)
    keep_config_maps: set[str] = field(default_factory=set)
    spec: FluxDeploymentSpec | None = None
    canary: CanaryRun | None = None
    """Strategy Canary: what ``NAME-canary``, the track Services and the route run."""
    requeue_after: float | None = None
    """Seconds until the canary has something due (analysis, a step's end)."""


@dataclass(frozen=True)
class Snapshot:
    """What :func:`plan_rollout` decides from: the resource as read (its spec, status,
    generation and annotations), its children as read, the canary analysis made for this
    reconciliation (None: none was due) and the time."""

    owner: Owner
    spec: FluxDeploymentSpec
    status: FluxDeploymentStatus
    now: str
    generation: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    children: Children = field(default_factory=Children)
    measurements: list[Measurement] | None = None


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(
        name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid")
    )


def parse_status(raw: Any) -> FluxDeploymentStatus:
    try:
        return FluxDeploymentStatus.model_validate(raw or {})
    except ValueError:
        # A status we cannot read (hand-edited, older format) is rebuilt from scratch.
        return FluxDeploymentStatus()


def _cannot_serve(
    status: FluxDeploymentStatus, generation: int | None, reason: str, message: str, now: str
) -> Plan:
    """Degraded, children untouched; the Warning only when the message is new (every
    resync would repeat it otherwise)."""
    old = next((c for c in status.conditions if c.type == "Degraded"), None)
    repeated = old is not None and old.status == "True" and old.message == message
    events = [] if repeated else [Event("Warning", reason, message)]
    return Plan(
        revision=None,
        status=degraded_status(status, generation, reason, message, now),
        events=events,
    )


def plan(
    body: Mapping[str, Any],
    children: Children,
    now: str,
    measurements: list[Measurement] | None = None,
) -> Plan:
    """Everything one reconciliation decides, from the resource ``body`` and its
    ``children`` as read: a spec that cannot be served, a revision whose presets are gone
    and children that belong to something else are Degraded and touch nothing; else the
    rollout's plan (:func:`plan_rollout`). ``measurements`` is the canary analysis made for
    this reconciliation (None: none was due)."""
    meta = body["metadata"]
    generation = meta.get("generation")
    status = parse_status(body.get("status"))
    problems = spec_problems(dict(body))
    if problems:
        return _cannot_serve(status, generation, "InvalidSpec", "; ".join(problems), now)

    owner = owner_of(body)
    spec = FluxDeploymentSpec.model_validate(body["spec"])
    problems = validate_canary(spec)
    if problems:
        # Refused before anything starts: never a half-started canary.
        return _cannot_serve(status, generation, "InvalidCanary", "; ".join(problems), now)
    decided = plan_rollout(
        Snapshot(
            owner,
            spec,
            status,
            now,
            generation,
            annotations=meta.get("annotations") or {},
            children=children,
            measurements=measurements,
        )
    )
    revision = decided.revision
    assert revision is not None
    if revision != desired_revision(owner, spec) and not children.has_config_map(
        revision.presets_config_map
    ):
        # An older revision's presets are only in its ConfigMap: without it, stop here.
        message = (
            f"presets ConfigMap {revision.presets_config_map} of release "
            f"{revision.release} is missing; cannot restore it"
        )
        return Plan(
            revision=None,
            status=degraded_status(decided.status, generation, "PresetsMissing", message, now),
            events=[*decided.events, Event("Warning", "PresetsMissing", message)],
        )

    foreign = _foreign(owner, spec, children)
    if foreign:
        # Never take over what someone else made: say so and leave it alone.
        message = f"{', '.join(foreign)} already exist(s) and belong(s) to something else"
        return _cannot_serve(status, generation, "ChildConflict", message, now)
    decided.spec = spec
    decided.status = scale_to_zero(decided.status, spec, children.keda_installed, now, generation)
    return decided


def _foreign(owner: Owner, spec: FluxDeploymentSpec, children: Children) -> list[str]:
    wants_policy = spec.network_policy is not None and spec.network_policy.enabled
    keda = children.keda_installed and spec.autoscaling is not None and spec.autoscaling.keda
    return foreign_children(owner, children, spec.autoscaling is not None, wants_policy, keda)


def plan_rollout(snapshot: Snapshot) -> Plan:
    """Which revision runs and the status that follows, for a spec that can be served
    (with strategy Canary, :func:`plan_canary` decides the revisions)."""
    observed = Observed.from_deployment(snapshot.children.deployment)
    work = _work(snapshot)
    manual_rollback(work, snapshot.annotations.get(ROLLBACK_ANNOTATION))
    canary: CanaryOutcome | None = None
    if snapshot.spec.rollout.strategy == "Canary":
        canary = _canary_step(work, snapshot, observed)
        target = canary.target
    else:
        leave_canary(work, snapshot.status.canary)
        target = target_revision(work)
        start_revision_if_new(work, target)
        target = observe(work, observed, target)
    current = work.current
    assert current is not None
    if current.outcome == "Failed" and work.degraded is None:
        work.degraded = ("ProgressDeadlineExceeded", failed_release_message(work, current))
    _prune(work, current, canary)
    return Plan(
        revision=target,
        status=_status(work, snapshot, observed, canary),
        events=work.events,
        keep_config_maps={e.presets_config_map for e in work.history},
        canary=canary.run if canary else None,
        requeue_after=canary.requeue_after if canary else None,
    )


def _work(snapshot: Snapshot) -> Work:
    status, generation = snapshot.status, snapshot.generation
    rollback = status.rollback
    # A rollback holds until the spec changes (a new generation): then the spec wins again.
    if rollback is not None and generation is not None and rollback.generation != generation:
        rollback = None
    history = list(status.history)
    return Work(
        owner=snapshot.owner,
        spec=snapshot.spec,
        generation=generation,
        now=snapshot.now,
        history=history,
        current=next((e for e in history if e.revision == status.current_revision), None),
        rollback=rollback,
        handled=status.handled_rollback_to,
    )


def _canary_step(work: Work, snapshot: Snapshot, observed: Observed) -> CanaryOutcome:
    seen = snapshot.children
    return plan_canary(
        work,
        observed=observed,
        previous=snapshot.status.canary,
        children={
            "stable": seen.deployment,
            "canary": seen.canary_deployment,
            "autoscaler": seen.autoscaler,
        },
        annotations=dict(snapshot.annotations),
        measurements=snapshot.measurements,
        now=parse_time(snapshot.now),
    )


def _prune(work: Work, current: HistoryEntry, canary: CanaryOutcome | None) -> None:
    """The history within its limit, keeping what runs, what may be rolled back to and the
    canary's revision."""
    healthy_revisions = [e.revision for e in work.history if e.available_time is not None]
    keep = {current.revision, *healthy_revisions[-1:]}
    if work.rollback is not None:
        keep.add(work.rollback.to_revision)
    if canary is not None and canary.status is not None and canary.status.revision is not None:
        keep.add(canary.status.revision)
    limit = work.spec.rollout.revision_history_limit
    work.history = prune_history(work.history, limit, keep)


def _status(
    work: Work, snapshot: Snapshot, observed: Observed, canary: CanaryOutcome | None
) -> FluxDeploymentStatus:
    generation, now = snapshot.generation, snapshot.now
    conditions, phase = conditions_and_phase(work, snapshot.status.conditions, observed)
    if canary is not None and canary.status is not None and work.degraded is None:
        conditions, phase = canary_conditions(
            conditions, phase, canary.status, canary.inconclusive, now, generation
        )
    current = work.current
    assert current is not None
    return FluxDeploymentStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conditions,
        replicas=observed.replicas,
        ready_replicas=observed.ready_replicas,
        selector=selector_string(snapshot.owner),
        current_release=current.release,
        current_revision=current.revision,
        history=work.history,
        rollback=work.rollback,
        handled_rollback_to=work.handled,
        canary=canary.status.summarized() if canary and canary.status else None,
    )

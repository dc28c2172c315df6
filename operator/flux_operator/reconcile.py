"""Decide, without I/O: which revision runs, what the history says, and which conditions,
phase and events follow from what was observed.

``plan(...)`` takes the resource (spec, status, annotations, generation), the Deployment as
observed, and the time, and returns a ``Plan``. The handler applies it. Everything a test
of rollouts and rollbacks needs to reason about is here, in one pure function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from flux_operator.render import (
    ROLLBACK_ANNOTATION,
    Owner,
    Revision,
    desired_revision,
    selector_string,
)
from flux_operator.spec import (
    Condition,
    ConditionType,
    FluxDeploymentSpec,
    FluxDeploymentStatus,
    HistoryEntry,
    RollbackRecord,
)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass
class Plan:
    """What to do: run ``revision`` and write ``status``; post ``events``."""

    revision: Revision | None
    status: FluxDeploymentStatus
    events: list[Event] = field(default_factory=list)
    keep_config_maps: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Observed:
    """The Deployment as the API server reports it, reduced to what decisions need."""

    exists: bool
    image: str | None = None
    presets_hash: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    available: bool = False
    deadline_exceeded: bool = False
    deadline_message: str = ""
    current: bool = True
    """The controller has seen the latest template (observedGeneration >= generation)."""

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any] | None) -> Observed:
        if deployment is None:
            return cls(exists=False)
        spec = deployment.get("spec", {})
        status = deployment.get("status") or {}
        template = spec.get("template", {})
        containers = template.get("spec", {}).get("containers") or [{}]
        annotations = template.get("metadata", {}).get("annotations") or {}
        desired = int(spec.get("replicas", 1))
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing", {})
        available_cond = conditions.get("Available", {})
        generation = deployment.get("metadata", {}).get("generation")
        observed_generation = status.get("observedGeneration")
        current = generation is None or (
            observed_generation is not None and int(observed_generation) >= int(generation)
        )
        updated = int(status.get("updatedReplicas") or 0)
        available_replicas = int(status.get("availableReplicas") or 0)
        replicas = int(status.get("replicas") or 0)
        deadline_exceeded = (
            progressing.get("reason") == "ProgressDeadlineExceeded"
            and progressing.get("status") == "False"
        )
        # As `kubectl rollout status` decides: every pod is of the new template and available.
        rolled_out = not deadline_exceeded and (
            (
                progressing.get("reason") == "NewReplicaSetAvailable"
                and progressing.get("status") == "True"
            )
            or (
                "replicas" in status
                and updated >= desired
                and replicas == updated
                and available_replicas >= updated
            )
        )
        return cls(
            exists=True,
            image=containers[0].get("image"),
            presets_hash=annotations.get("fluxserve.dev/presets-hash"),
            replicas=replicas,
            ready_replicas=int(status.get("readyReplicas") or 0),
            desired_replicas=desired,
            available=rolled_out
            and available_cond.get("status", "True") == "True"
            and available_replicas >= desired,
            deadline_exceeded=deadline_exceeded,
            deadline_message=str(progressing.get("message", "")),
            current=current,
        )

    def runs(self, revision: Revision) -> bool:
        return (
            self.exists
            and self.current
            and self.image == revision.image
            and self.presets_hash == revision.presets_hash
        )


def _revision_of(entry: HistoryEntry) -> Revision:
    return Revision(entry.release, entry.image, entry.presets_hash, entry.presets_config_map)


def _same(entry: HistoryEntry, revision: Revision) -> bool:
    return _revision_of(entry) == revision


def _set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    value: Literal["True", "False"] = "True" if status else "False"
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [new]


def _find_rollback_target(history: list[HistoryEntry], release: str) -> HistoryEntry | None:
    healthy = [e for e in history if e.release == release and e.available_time is not None]
    if healthy:
        return healthy[-1]
    named = [e for e in history if e.release == release]
    return named[-1] if named else None


def _append(history: list[HistoryEntry], revision: Revision, now: str) -> HistoryEntry:
    number = max((e.revision for e in history), default=0) + 1
    entry = HistoryEntry(
        revision=number,
        release=revision.release,
        image=revision.image,
        presets_hash=revision.presets_hash,
        presets_config_map=revision.presets_config_map,
        time=now,
        outcome="Progressing",
    )
    history.append(entry)
    return entry


def _replace(history: list[HistoryEntry], entry: HistoryEntry, **changes: Any) -> HistoryEntry:
    updated = entry.model_copy(update=changes)
    history[history.index(entry)] = updated
    return updated


def _prune(history: list[HistoryEntry], limit: int, keep: set[int]) -> list[HistoryEntry]:
    """Newest ``limit`` entries, plus the current and the last healthy one."""
    if len(history) <= limit:
        return history
    newest = {e.revision for e in history[-limit:]}
    return [e for e in history if e.revision in newest or e.revision in keep]


def degraded_status(
    status: FluxDeploymentStatus, generation: int | None, reason: str, message: str, now: str
) -> FluxDeploymentStatus:
    """The status of a resource the operator cannot serve; children are left as they are."""
    conditions = _set_condition(
        status.conditions, "Degraded", True, reason, message, now, generation
    )
    conditions = _set_condition(conditions, "Ready", False, reason, message, now, generation)
    conditions = _set_condition(
        conditions, "Progressing", False, reason, "nothing rolls out", now, generation
    )
    if not any(c.type == "RolledBack" for c in conditions):
        conditions = _set_condition(
            conditions, "RolledBack", False, "NoRollback", "", now, generation
        )
    return status.model_copy(
        update={"observed_generation": generation, "phase": "Degraded", "conditions": conditions}
    )


@dataclass
class _Work:
    """The state ``plan`` builds up, step by step."""

    owner: Owner
    spec: FluxDeploymentSpec
    generation: int | None
    now: str
    history: list[HistoryEntry]
    current: HistoryEntry | None
    rollback: RollbackRecord | None
    handled: str | None
    events: list[Event] = field(default_factory=list)
    degraded: tuple[str, str] | None = None

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))


def _manual_rollback(work: _Work, requested: str | None) -> None:
    """The rollback-to annotation, acted on once per value."""
    if requested is None:
        work.handled = None
        return
    if requested == work.handled:
        return
    work.handled = requested
    target = _find_rollback_target(work.history, requested)
    if target is None:
        work.event("Warning", "RollbackTargetNotFound", f"release {requested!r} is not in history")
        return
    if work.current is not None and _same(work.current, _revision_of(target)):
        work.event("Normal", "RollbackNotNeeded", f"release {requested!r} is already running")
        return
    from_entry = work.current
    if from_entry is not None:
        from_entry = _replace(
            work.history, from_entry, outcome="RolledBack", message=f"rolled back to {requested}"
        )
    restored = _append(work.history, _revision_of(target), work.now)
    work.rollback = RollbackRecord(
        from_release=from_entry.release if from_entry else "",
        from_revision=from_entry.revision if from_entry else 0,
        to_revision=restored.revision,
        to_release=restored.release,
        generation=work.generation or 0,
        manual=True,
        reason="ManualRollback",
    )
    work.current = restored
    work.event(
        "Normal",
        "RolledBack",
        f"rolled back from {work.rollback.from_release or '-'} to {requested} "
        f"(revision {restored.revision}) by {ROLLBACK_ANNOTATION}",
    )


def _target(work: _Work) -> Revision:
    """The revision that should run: the pinned one during a rollback, else the spec's."""
    if work.rollback is not None:
        pinned = next((e for e in work.history if e.revision == work.rollback.to_revision), None)
        if pinned is not None:
            return _revision_of(pinned)
    return desired_revision(work.owner, work.spec)


def _start_revision_if_new(work: _Work, target: Revision) -> HistoryEntry:
    current = work.current
    if current is not None and _same(current, target):
        return current
    if current is not None and current.outcome in ("Progressing", "Available"):
        _replace(work.history, current, outcome="Superseded")
    current = _append(work.history, target, work.now)
    work.event(
        "Normal",
        "RolloutStarted",
        f"revision {current.revision}: release {current.release}, image {current.image}",
    )
    work.current = current
    return current


def _observe(work: _Work, observed: Observed, target: Revision) -> Revision:
    """Apply what the Deployment says about the running revision; returns the revision to
    run (another one after an automatic rollback)."""
    current = work.current
    assert current is not None
    if not observed.runs(target) or current.outcome != "Progressing":
        return target
    if observed.available:
        work.current = _replace(work.history, current, outcome="Available", available_time=work.now)
        work.event(
            "Normal",
            "RevisionAvailable",
            f"revision {current.revision} (release {current.release}) is available",
        )
        return target
    if not observed.deadline_exceeded:
        return target
    why = observed.deadline_message or "progress deadline exceeded"
    healthy = [
        e
        for e in work.history
        if e.available_time is not None and e.revision != current.revision and not _same(e, target)
    ]
    if work.rollback is None and work.spec.rollout.auto_rollback and healthy:
        good = healthy[-1]
        failed = _replace(work.history, current, outcome="RolledBack", message=why)
        restored = _append(work.history, _revision_of(good), work.now)
        work.rollback = RollbackRecord(
            from_release=failed.release,
            from_revision=failed.revision,
            to_revision=restored.revision,
            to_release=restored.release,
            generation=work.generation or 0,
            manual=False,
            reason="ProgressDeadlineExceeded",
        )
        work.current = restored
        work.event(
            "Warning",
            "RolledBack",
            f"release {failed.release} (revision {failed.revision}) missed its progress "
            f"deadline: {why}; rolled back to release {good.release} "
            f"(revision {restored.revision})",
        )
        return _revision_of(restored)
    failed = _replace(work.history, current, outcome="Failed", message=why)
    work.current = failed
    if work.rollback is not None:
        reason = "restored revision failed too; not rolling back again"
    elif not work.spec.rollout.auto_rollback:
        reason = "autoRollback is off"
    else:
        reason = "no healthy revision to roll back to"
    work.degraded = (
        "ProgressDeadlineExceeded",
        f"release {failed.release} (revision {failed.revision}): {why}; {reason}",
    )
    work.event("Warning", "RolloutFailed", work.degraded[1])
    return target


def _conditions(
    work: _Work, old: list[Condition], observed: Observed
) -> tuple[list[Condition], Any]:
    """Conditions and phase from the outcome of the steps."""
    current = work.current
    assert current is not None
    now, gen = work.now, work.generation
    suspended = work.spec.autoscaling is None and work.spec.replicas == 0
    ready = suspended or (current.outcome == "Available" and observed.ready_replicas > 0)
    conditions = list(old)

    if work.degraded is not None:
        conditions = _set_condition(conditions, "Degraded", True, *work.degraded, now, gen)
    else:
        conditions = _set_condition(conditions, "Degraded", False, "AsExpected", "", now, gen)

    if current.outcome == "Progressing":
        message = f"revision {current.revision} (release {current.release}) is rolling out"
        conditions = _set_condition(
            conditions, "Progressing", True, "RolloutInProgress", message, now, gen
        )
    else:
        reason = "RolloutComplete" if current.outcome == "Available" else "RolloutFailed"
        message = f"revision {current.revision} (release {current.release}): {current.outcome}"
        conditions = _set_condition(conditions, "Progressing", False, reason, message, now, gen)

    if suspended:
        conditions = _set_condition(
            conditions, "Ready", True, "Suspended", "replicas is 0 and no autoscaling", now, gen
        )
    elif ready:
        message = f"{observed.ready_replicas} pod(s) serve release {current.release}"
        conditions = _set_condition(conditions, "Ready", True, "Available", message, now, gen)
    else:
        reason = "RolloutFailed" if work.degraded else "NotAvailable"
        message = f"{observed.ready_replicas}/{observed.desired_replicas} pod(s) ready"
        conditions = _set_condition(conditions, "Ready", False, reason, message, now, gen)

    rollback = work.rollback
    if rollback is not None:
        how = "manually" if rollback.manual else "automatically"
        message = (
            f"release {rollback.from_release or '-'} (revision {rollback.from_revision}) was "
            f"rolled back {how} to release {rollback.to_release} "
            f"(revision {rollback.to_revision}); change the spec to roll forward"
        )
        conditions = _set_condition(
            conditions, "RolledBack", True, rollback.reason, message, now, gen
        )
    else:
        conditions = _set_condition(conditions, "RolledBack", False, "NoRollback", "", now, gen)

    order = {"Ready": 0, "Progressing": 1, "Degraded": 2, "RolledBack": 3}
    conditions.sort(key=lambda c: order[c.type])

    if work.degraded is not None:
        phase = "Degraded"
    elif rollback is not None:
        phase = "RolledBack"
    elif ready:
        phase = "Ready"
    elif observed.exists:
        phase = "Progressing"
    else:
        phase = "Pending"
    return conditions, phase


def plan(
    owner: Owner,
    spec: FluxDeploymentSpec,
    status: FluxDeploymentStatus,
    annotations: dict[str, str],
    generation: int | None,
    deployment: dict[str, Any] | None,
    now: str,
) -> Plan:
    """Which revision runs and the status that follows (see the module docstring)."""
    observed = Observed.from_deployment(deployment)
    rollback = status.rollback
    # A rollback holds until the spec changes (a new generation): then the spec wins again.
    if rollback is not None and generation is not None and rollback.generation != generation:
        rollback = None
    history = list(status.history)
    work = _Work(
        owner=owner,
        spec=spec,
        generation=generation,
        now=now,
        history=history,
        current=next((e for e in history if e.revision == status.current_revision), None),
        rollback=rollback,
        handled=status.handled_rollback_to,
    )

    _manual_rollback(work, annotations.get(ROLLBACK_ANNOTATION))
    target = _target(work)
    current = _start_revision_if_new(work, target)
    target = _observe(work, observed, target)
    current = work.current or current
    if current.outcome == "Failed" and work.degraded is None:
        work.degraded = (
            "ProgressDeadlineExceeded",
            f"release {current.release} (revision {current.revision}) failed: {current.message}",
        )

    healthy_revisions = [e.revision for e in work.history if e.available_time is not None]
    keep = {current.revision, *healthy_revisions[-1:]}
    if work.rollback is not None:
        keep.add(work.rollback.to_revision)
    work.history = _prune(work.history, spec.rollout.revision_history_limit, keep)

    conditions, phase = _conditions(work, status.conditions, observed)
    new_status = FluxDeploymentStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conditions,
        replicas=observed.replicas,
        ready_replicas=observed.ready_replicas,
        selector=selector_string(owner),
        current_release=current.release,
        current_revision=current.revision,
        history=work.history,
        rollback=work.rollback,
        handled_rollback_to=work.handled,
    )
    return Plan(
        revision=target,
        status=new_status,
        events=work.events,
        keep_config_maps={e.presets_config_map for e in work.history},
    )

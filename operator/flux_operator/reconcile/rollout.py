"""The steps of a rollout, each deciding from the history and the observed Deployment:
a manual rollback, the revision to run, a new revision, an automatic rollback."""

from __future__ import annotations

from dataclasses import dataclass, field

from flux_operator.reconcile.events import Event, EventType
from flux_operator.reconcile.history import (
    append_entry,
    find_rollback_target,
    replace_entry,
    revision_of,
    same_revision,
)
from flux_operator.reconcile.observed import Observed
from flux_operator.render import (
    ROLLBACK_ANNOTATION,
    Owner,
    Revision,
    desired_revision,
)
from flux_operator.spec import (
    FluxDeploymentSpec,
    HistoryEntry,
    RollbackRecord,
)


@dataclass
class Work:
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

    def roll_back(
        self,
        failed: HistoryEntry | None,
        to: HistoryEntry,
        reason: str,
        *,
        manual: bool,
        message: str | None = None,
    ) -> RollbackRecord:
        """Record a rollback from ``failed`` to ``to``, held until the spec changes."""
        self.rollback = RollbackRecord(
            from_release=failed.release if failed else "",
            from_revision=failed.revision if failed else 0,
            to_revision=to.revision,
            to_release=to.release,
            generation=self.generation or 0,
            manual=manual,
            reason=reason,
            message=message,
        )
        return self.rollback


def manual_rollback(work: Work, requested: str | None) -> None:
    """The rollback-to annotation, acted on once per value."""
    if requested is None:
        work.handled = None
        return
    if requested == work.handled:
        return
    work.handled = requested
    target = find_rollback_target(work.history, requested)
    if target is None:
        work.event("Warning", "RollbackTargetNotFound", f"release {requested!r} is not in history")
        return
    if work.current is not None and same_revision(work.current, revision_of(target)):
        work.event("Normal", "RollbackNotNeeded", f"release {requested!r} is already running")
        return
    from_entry = work.current
    if from_entry is not None:
        from_entry = replace_entry(
            work.history, from_entry, outcome="RolledBack", message=f"rolled back to {requested}"
        )
    restored = append_entry(work.history, revision_of(target), work.now)
    record = work.roll_back(from_entry, restored, "ManualRollback", manual=True)
    work.current = restored
    work.event(
        "Normal",
        "RolledBack",
        f"rolled back from {record.from_release or '-'} to {requested} "
        f"(revision {restored.revision}) by {ROLLBACK_ANNOTATION}",
    )


def target_revision(work: Work) -> Revision:
    """The revision that should run: the pinned one during a rollback, else the spec's."""
    if work.rollback is not None:
        pinned = next((e for e in work.history if e.revision == work.rollback.to_revision), None)
        if pinned is not None:
            return revision_of(pinned)
    return desired_revision(work.owner, work.spec)


def start_revision_if_new(work: Work, target: Revision) -> HistoryEntry:
    current = work.current
    if current is not None and same_revision(current, target):
        return current
    if current is not None and current.outcome in ("Progressing", "Available"):
        replace_entry(work.history, current, outcome="Superseded")
    current = append_entry(work.history, target, work.now)
    work.event(
        "Normal",
        "RolloutStarted",
        f"revision {current.revision}: release {current.release}, image {current.image}",
    )
    work.current = current
    return current


def observe(work: Work, observed: Observed, target: Revision) -> Revision:
    """Apply what the Deployment says about the running revision; returns the revision to
    run (another one after an automatic rollback)."""
    current = work.current
    assert current is not None
    if not observed.runs(target) or current.outcome != "Progressing":
        return target
    if observed.available:
        work.current = replace_entry(
            work.history, current, outcome="Available", available_time=work.now
        )
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
        if e.available_time is not None
        and e.revision != current.revision
        and not same_revision(e, target)
    ]
    if work.rollback is None and work.spec.rollout.auto_rollback and healthy:
        good = healthy[-1]
        failed = replace_entry(work.history, current, outcome="RolledBack", message=why)
        restored = append_entry(work.history, revision_of(good), work.now)
        work.roll_back(failed, restored, "ProgressDeadlineExceeded", manual=False)
        work.current = restored
        work.event(
            "Warning",
            "RolledBack",
            f"release {failed.release} (revision {failed.revision}) missed its progress "
            f"deadline: {why}; rolled back to release {good.release} "
            f"(revision {restored.revision})",
        )
        return revision_of(restored)
    failed = replace_entry(work.history, current, outcome="Failed", message=why)
    work.current = failed
    work.degraded = ("ProgressDeadlineExceeded", failed_release_message(work, failed))
    work.event("Warning", "RolloutFailed", work.degraded[1])
    return target


def failed_release_message(work: Work, failed: HistoryEntry) -> str:
    """The Degraded condition's message for a release that missed its deadline and was
    not rolled back, and why not: the same words on the round that saw it fail and on
    every round after (a condition whose message changes with no change in the cluster
    reads as a new event)."""
    if work.rollback is not None:
        reason = "restored revision failed too; not rolling back again"
    elif not work.spec.rollout.auto_rollback:
        reason = "autoRollback is off"
    else:
        reason = "no healthy revision to roll back to"
    why = failed.message or "progress deadline exceeded"
    return f"release {failed.release} (revision {failed.revision}): {why}; {reason}"

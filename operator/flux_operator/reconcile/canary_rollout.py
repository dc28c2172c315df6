"""Strategy Canary as a step of ``plan_rollout``: which revision ``NAME`` runs, whether
``NAME-canary`` runs the new one and with how many pods, the route's weight, and the
canary's status, history entry and events. Pure: the measurements come in as data.

The rules:

- While a canary runs, ``status.currentRevision`` stays the stable revision (the one
  ``NAME`` runs: the last Available one, image and presets together) and the canary's
  revision is a ``Progressing`` history entry named by ``status.canary.revision``.
- A spec whose revision differs from the stable one starts a canary when a stable
  revision exists; the first revision (nothing Available yet) rolls out as usual.
- Until ``NAME-canary`` has a ready pod, the first step's clock does not run and the route
  sends it nothing.
- **Abort** (a metric past its bound more than ``failureLimit`` times, a missed progress
  deadline, ``abort NAME``): the canary's entry is ``Failed``, and a rollback record to
  the stable revision holds until the spec changes (so the failed release is not retried
  and the ``RolledBack`` condition names the metric, value and bound).
- **Promote**: the canary's entry becomes the current revision and ``NAME`` rolls to it;
  when it is Available the canary Deployment is removed, ``NAME`` goes back to its full
  count and ``status.canary`` says ``Promoted``. While ``NAME`` rolls, pods stay within
  the canary's budget (``NAME + canary <= total + maxSurge``; see
  :func:`promotion_pods`): a cluster with exactly that many GPUs still promotes.
- ``status.canary`` is cleared when the spec asks for another revision than the canary's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flux_operator.reconcile.canary_decision import (
    Abort,
    Advance,
    Inconclusive,
    Promote,
    WaitForPromote,
    analysis_due,
    decide,
    manual_request,
    next_check_seconds,
    start,
)
from flux_operator.reconcile.canary_pods import pod_counts, promotion_pods, replicas_of
from flux_operator.reconcile.history import append_entry, replace_entry, revision_of, same_revision
from flux_operator.reconcile.observed import Observed
from flux_operator.reconcile.rollout import Work, observe, start_revision_if_new
from flux_operator.render import CanaryRun, Revision, desired_revision
from flux_operator.spec import (
    CanaryAnalysis,
    CanaryStatus,
    FluxDeploymentSpec,
    HistoryEntry,
    Measurement,
)

RUNNING = ("Starting", "Progressing", "Paused")


@dataclass(frozen=True)
class CanaryOutcome:
    target: Revision
    """The revision ``NAME`` runs."""
    status: CanaryStatus | None
    run: CanaryRun
    requeue_after: float | None = None
    inconclusive: str | None = None
    """Why the last round decided nothing (Prometheus unreachable, no data)."""


def serves(pods: Observed, revision: Revision) -> bool:
    """The canary Deployment's template is ``revision``'s and some of its pods are ready
    (a step that adds pods bumps its generation: the pods already ready still serve)."""
    return (
        pods.exists
        and pods.image == revision.image
        and pods.presets_hash == revision.presets_hash
        and pods.ready_replicas > 0
    )


def _entry(work: Work, revision: int | None) -> HistoryEntry | None:
    return next((e for e in work.history if e.revision == revision), None)


def _ended(status: CanaryStatus, phase: str, message: str) -> CanaryStatus:
    return status.model_copy(
        update={"phase": phase, "weight": 0, "step_ends_at": None, "message": message}
    )


def plan_canary(
    work: Work,
    *,
    observed: Observed,
    previous: CanaryStatus | None,
    children: dict[str, dict[str, Any] | None],
    annotations: dict[str, str],
    measurements: list[Measurement] | None,
    now: datetime,
) -> CanaryOutcome:
    """The canary's step of ``plan_rollout`` (strategy Canary). ``children`` holds the
    observed ``stable`` and ``canary`` Deployments and the ``autoscaler``."""
    desired = desired_revision(work.owner, work.spec)
    canary_entry = _entry(work, previous.revision) if previous is not None else None
    belongs = canary_entry is not None and same_revision(canary_entry, desired)
    stable = work.current

    def ordinary(status: CanaryStatus | None) -> CanaryOutcome:
        target = work_target(work, desired)
        current = start_revision_if_new(work, target)
        work.current = current
        return CanaryOutcome(observe(work, observed, target), status, CanaryRun(None))

    def supersede_running(message: str) -> None:
        running = previous is not None and previous.phase in RUNNING
        if running and canary_entry is not None and canary_entry.outcome == "Progressing":
            replace_entry(work.history, canary_entry, outcome="Superseded", message=message)

    # A rollback in force (a canary aborted, or rollback-to) pins the stable revision.
    if work.rollback is not None:
        if previous is not None and previous.phase in RUNNING:
            supersede_running("a rollback ended the canary")
            previous = _ended(previous, "Aborted", "a rollback ended the canary")
        return ordinary(previous if belongs else None)

    if belongs and previous is not None and previous.phase in ("Promoting", "Promoted"):
        return _promoting(work, observed, previous, desired, children)

    if stable is None or stable.available_time is None or same_revision(stable, desired):
        # Nothing served yet (the first revision rolls out as usual), or the spec is back
        # on the stable revision: no canary.
        supersede_running(f"the spec went back to release {desired.release}")
        return ordinary(previous if belongs else None)

    if not belongs or previous is None or previous.phase not in RUNNING:
        supersede_running(f"replaced by release {desired.release} before promotion")
        return _start(work, desired, stable, children, now)
    assert canary_entry is not None
    return _step(
        work,
        (previous, canary_entry, desired, stable),
        observed=observed,
        children=children,
        annotations=annotations,
        now=now,
        measurements=measurements,
    )


def _start(
    work: Work,
    desired: Revision,
    stable: HistoryEntry,
    children: dict[str, dict[str, Any] | None],
    now: datetime,
) -> CanaryOutcome:
    """A new canary of ``desired`` beside ``stable``: its history entry, and the first step
    waiting for ``NAME-canary`` to have a ready pod."""
    canary_spec = work.spec.rollout.canary
    assert canary_spec is not None
    entry = append_entry(work.history, desired, work.now)
    started = start(canary_spec, desired.release, entry.revision, now).model_copy(
        update={
            "phase": "Starting",
            "step_ends_at": None,
            "message": f"waiting for {work.owner.name}-canary to have a ready pod",
        }
    )
    work.event(
        "Normal",
        "CanaryStarted",
        f"revision {entry.revision}: release {desired.release} runs as a canary beside "
        f"release {stable.release} (revision {stable.revision})",
    )
    return _running(work, started, desired, stable, children, 0, None)


def leave_canary(work: Work, previous: CanaryStatus | None) -> None:
    """Strategy Canary turned off: a canary still running ends (its entry Superseded; the
    reconciler removes its Deployment), and the rollout goes on as RollingUpdate."""
    if previous is None or previous.phase not in RUNNING:
        return
    entry = _entry(work, previous.revision)
    if entry is not None and entry.outcome == "Progressing":
        replace_entry(work.history, entry, outcome="Superseded", message="strategy changed")


def work_target(work: Work, desired: Revision) -> Revision:
    if work.rollback is not None:
        pinned = _entry(work, work.rollback.to_revision)
        if pinned is not None:
            return revision_of(pinned)
    return desired


def _running(
    work: Work,
    status: CanaryStatus,
    desired: Revision,
    stable: HistoryEntry,
    children: dict[str, dict[str, Any] | None],
    weight: int,
    requeue: float | None,
    inconclusive: str | None = None,
) -> CanaryOutcome:
    stable_replicas, canary_replicas, reduction = pod_counts(
        work.spec,
        status.weight,
        stable=children.get("stable"),
        autoscaler=children.get("autoscaler"),
    )
    run = CanaryRun(desired, weight, stable_replicas, canary_replicas, reduction)
    return CanaryOutcome(revision_of(stable), status, run, requeue, inconclusive)


def _abort(
    work: Work,
    status: CanaryStatus,
    entry: HistoryEntry,
    stable: HistoryEntry,
    message: str,
    manual: bool,
) -> CanaryOutcome:
    replace_entry(work.history, entry, outcome="Failed", message=message)
    work.roll_back(entry, stable, "CanaryAborted", manual=manual, message=message)
    work.event("Warning", "CanaryAborted", f"{message}; release {stable.release} keeps serving")
    return CanaryOutcome(revision_of(stable), status, CanaryRun(None))


def _step(
    work: Work,
    canary: tuple[CanaryStatus, HistoryEntry, Revision, HistoryEntry],
    *,
    observed: Observed,
    children: dict[str, dict[str, Any] | None],
    annotations: dict[str, str],
    now: datetime,
    measurements: list[Measurement] | None,
) -> CanaryOutcome:
    """One reconciliation of a running canary: abort, promote, or hold/advance a step."""
    previous, entry, desired, stable = canary
    canary_spec = work.spec.rollout.canary
    assert canary_spec is not None
    name = f"{work.owner.name}-canary"
    pods = Observed.from_deployment(children.get("canary"))
    if pods.runs(desired) and pods.deadline_exceeded:
        why = pods.deadline_message or "progress deadline exceeded"
        message = f"canary {previous.release} aborted: {name} missed its progress deadline: {why}"
        return _abort(work, _ended(previous, "Aborted", message), entry, stable, message, False)
    request = manual_request(annotations, previous)
    if request is None and previous.phase == "Starting":
        if not serves(pods, desired):
            return _running(work, previous, desired, stable, children, 0, None)
        # The first step's clock starts now that the canary serves.
        begun = start(canary_spec, previous.release, previous.revision, now)
        begun = begun.model_copy(update={"message": f"step 0: weight {begun.weight}"})
        requeue = next_check_seconds(canary_spec, begun, now)
        return _running(work, begun, desired, stable, children, begun.weight, requeue)
    decision = decide(canary_spec, previous, measurements, now, request)
    if isinstance(decision, Abort):
        return _abort(work, decision.status, entry, stable, decision.message, request == "abort")
    if isinstance(decision, Promote):
        replace_entry(work.history, stable, outcome="Superseded")
        work.current = _entry(work, entry.revision)
        how = "by request" if decision.manual else "after its last step"
        work.event("Normal", "CanaryPromoted", f"release {previous.release} promoted {how}")
        return _promoting(work, observed, decision.status, desired, children)
    status = decision.status
    inconclusive = decision.reason if isinstance(decision, Inconclusive) else None
    if isinstance(decision, Advance):
        work.event("Normal", "CanaryAdvanced", f"step {decision.step}: weight {decision.weight}%")
    if isinstance(decision, WaitForPromote) and previous.phase != "Paused":
        work.event(
            "Normal",
            "CanaryPaused",
            f"step {decision.step} waits for `python -m flux_operator promote {work.owner.name}`",
        )
    if inconclusive and previous.message != inconclusive:
        work.event("Warning", "CanaryInconclusive", inconclusive)
    requeue = next_check_seconds(canary_spec, status, now)
    return _running(work, status, desired, stable, children, status.weight, requeue, inconclusive)


def _promoting(
    work: Work,
    observed: Observed,
    status: CanaryStatus,
    desired: Revision,
    children: dict[str, dict[str, Any] | None],
) -> CanaryOutcome:
    """``NAME`` rolls to the canary's revision; the canary keeps its pods (and serves
    through ``NAME``'s Service) until then, and is removed once ``NAME`` is Available."""
    target = observe(work, observed, desired)
    current = work.current
    if work.rollback is not None:
        message = (
            f"promotion of {status.release} failed: {work.owner.name} missed its progress "
            "deadline while rolling to it"
        )
        return CanaryOutcome(target, _ended(status, "Aborted", message), CanaryRun(None))
    if current is not None and current.outcome == "Available":
        promoted = status.model_copy(
            update={"phase": "Promoted", "weight": 100, "message": "promoted"}
        )
        return CanaryOutcome(target, promoted, CanaryRun(None))
    canary_replicas = replicas_of(children.get("canary")) or 0
    stable_replicas, reduction, surge = promotion_pods(
        work.spec, replicas_of(children.get("stable")), canary_replicas
    )
    run = CanaryRun(desired, 0, stable_replicas, canary_replicas, reduction, surge)
    return CanaryOutcome(target, status, run)


def analysis_due_for(
    spec: FluxDeploymentSpec,
    desired: Revision,
    previous: CanaryStatus | None,
    canary_deployment: dict[str, Any] | None,
    now: datetime,
) -> CanaryAnalysis | None:
    """The analysis to run before this reconciliation's plan, or None: only for a running
    canary of the spec's release whose Deployment serves it, every ``interval``."""
    canary_spec = spec.rollout.canary
    if spec.rollout.strategy != "Canary" or canary_spec is None or previous is None:
        return None
    if canary_spec.analysis is None or previous.release != desired.release:
        return None
    if not serves(Observed.from_deployment(canary_deployment), desired):
        return None
    return canary_spec.analysis if analysis_due(canary_spec, previous, now) else None

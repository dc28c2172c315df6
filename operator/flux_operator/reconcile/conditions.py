"""Conditions and phase: set one condition, the status of a resource that cannot be
served, and the conditions that follow from a plan's steps."""

from __future__ import annotations

from typing import Any, Literal

from flux_operator.reconcile.observed import Observed
from flux_operator.reconcile.rollout import Work
from flux_operator.spec import (
    CanaryStatus,
    Condition,
    ConditionType,
    FluxDeploymentSpec,
    FluxDeploymentStatus,
    HistoryEntry,
    RollbackRecord,
)


def set_condition(
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


def degraded_status(
    status: FluxDeploymentStatus, generation: int | None, reason: str, message: str, now: str
) -> FluxDeploymentStatus:
    """The status of a resource the operator cannot serve; children are left as they are."""
    conditions = set_condition(
        status.conditions, "Degraded", True, reason, message, now, generation
    )
    conditions = set_condition(conditions, "Ready", False, reason, message, now, generation)
    conditions = set_condition(
        conditions, "Progressing", False, reason, "nothing rolls out", now, generation
    )
    if not any(c.type == "RolledBack" for c in conditions):
        conditions = set_condition(
            conditions, "RolledBack", False, "NoRollback", "", now, generation
        )
    return status.model_copy(
        update={"observed_generation": generation, "phase": "Degraded", "conditions": conditions}
    )


_Wanted = tuple[ConditionType, bool, str, str]
"""A condition to set: type, status, reason, message."""


def conditions_and_phase(
    work: Work, old: list[Condition], observed: Observed
) -> tuple[list[Condition], Any]:
    """Conditions and phase from the outcome of the steps."""
    current = work.current
    assert current is not None
    suspended = work.spec.autoscaling is None and work.spec.replicas == 0
    # Scaled to zero, the fronts serve (requests wait for a worker KEDA starts).
    idle = work.spec.autoscaling is not None and work.spec.autoscaling.min_replicas == 0
    serving = observed.ready_replicas > 0 or idle
    ready = suspended or (current.outcome == "Available" and serving)
    wanted = [
        _degraded(work),
        _progressing(current),
        _ready(work, current, observed, suspended=suspended, ready=ready),
        _rolled_back(work.rollback),
    ]
    conditions = list(old)
    for type_, status, reason, message in wanted:
        conditions = set_condition(
            conditions, type_, status, reason, message, work.now, work.generation
        )
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2, "RolledBack": 3, "ScaleToZero": 4}
    conditions.sort(key=lambda c: order[c.type])

    if work.degraded is not None:
        phase = "Degraded"
    elif work.rollback is not None:
        phase = "RolledBack"
    elif ready:
        phase = "Ready"
    elif observed.exists:
        phase = "Progressing"
    else:
        phase = "Pending"
    return conditions, phase


def _degraded(work: Work) -> _Wanted:
    if work.degraded is not None:
        return ("Degraded", True, *work.degraded)
    return ("Degraded", False, "AsExpected", "")


def _progressing(current: HistoryEntry) -> _Wanted:
    if current.outcome == "Progressing":
        message = f"revision {current.revision} (release {current.release}) is rolling out"
        return ("Progressing", True, "RolloutInProgress", message)
    reason = "RolloutComplete" if current.outcome == "Available" else "RolloutFailed"
    message = f"revision {current.revision} (release {current.release}): {current.outcome}"
    return ("Progressing", False, reason, message)


def _ready(
    work: Work, current: HistoryEntry, observed: Observed, *, suspended: bool, ready: bool
) -> _Wanted:
    if suspended:
        return ("Ready", True, "Suspended", "replicas is 0 and no autoscaling")
    if ready:
        message = f"{observed.ready_replicas} pod(s) serve release {current.release}"
        return ("Ready", True, "Available", message)
    reason = "RolloutFailed" if work.degraded else "NotAvailable"
    message = f"{observed.ready_replicas}/{observed.desired_replicas} pod(s) ready"
    return ("Ready", False, reason, message)


def _rolled_back(rollback: RollbackRecord | None) -> _Wanted:
    if rollback is None:
        return ("RolledBack", False, "NoRollback", "")
    how = "manually" if rollback.manual else "automatically"
    message = (
        f"release {rollback.from_release or '-'} (revision {rollback.from_revision}) was "
        f"rolled back {how} to release {rollback.to_release} "
        f"(revision {rollback.to_revision}); change the spec to roll forward"
    )
    if rollback.message:
        message = f"{rollback.message}; {message}"
    return ("RolledBack", True, rollback.reason, message)


CANARY_REASONS = {
    "Starting": "CanaryStarting",
    "Progressing": "CanaryProgressing",
    "Paused": "CanaryWaitsForPromote",
    "Promoting": "CanaryPromoting",
}


def canary_conditions(
    conditions: list[Condition],
    phase: Any,
    canary: CanaryStatus,
    inconclusive: str | None,
    now: str,
    generation: int | None,
) -> tuple[list[Condition], Any]:
    """While a canary runs, ``Progressing`` says where it stands (and, when the last
    analysis could not decide, why: Prometheus unreachable, a query without data)."""
    reason = CANARY_REASONS.get(canary.phase)
    if reason is None:
        return conditions, phase
    if inconclusive:
        reason, message = "CanaryInconclusive", f"canary {canary.release} holds: {inconclusive}"
    else:
        message = (
            f"canary {canary.release} at step {canary.step} ({canary.weight}% of traffic): "
            f"{canary.message or canary.phase}"
        )
    conditions = set_condition(conditions, "Progressing", True, reason, message, now, generation)
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2, "RolledBack": 3, "ScaleToZero": 4}
    conditions.sort(key=lambda c: order[c.type])
    return conditions, "Progressing" if phase == "Ready" else phase


KEDA_MISSING = (
    "KEDA is not installed (no CRD scaledobjects.keda.sh): the HPA keeps at least 1 "
    "worker; install KEDA to scale to zero"
)


def scale_to_zero(
    status: FluxDeploymentStatus,
    spec: FluxDeploymentSpec,
    keda_installed: bool,
    now: str,
    generation: int | None,
) -> FluxDeploymentStatus:
    """The ScaleToZero condition where the spec asks KEDA to scale (``minReplicas: 0`` or
    ``engine: keda``): True with KEDA installed, False with the reason otherwise; absent
    where it does not ask."""
    scaling = spec.autoscaling
    if scaling is None or not scaling.keda:
        kept = [c for c in status.conditions if c.type != "ScaleToZero"]
        return status.model_copy(update={"conditions": kept})
    if keda_installed:
        floor = "to zero" if scaling.min_replicas == 0 else f"down to {scaling.min_replicas}"
        reason, message = "KedaScaledObject", f"KEDA scales the workers {floor} on the queue"
    else:
        reason, message = "KedaNotInstalled", KEDA_MISSING
    conditions = set_condition(
        status.conditions, "ScaleToZero", keda_installed, reason, message, now, generation
    )
    return status.model_copy(update={"conditions": conditions})
